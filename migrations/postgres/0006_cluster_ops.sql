-- Several daemons on one schema (issue 15), continued.
-- admin: the URL of the node's admin listener, so that a follower asked to run a sync can
--   name the leader's (and `scimsync sync now` follows it there).
-- instance: a random id of the process beating under node_id; a different process beating
--   under the same node id while the row is fresh means two live daemons share one name
--   (both would hold the one lease): the newcomer refuses to start.
ALTER TABLE cluster_nodes ADD COLUMN admin TEXT NOT NULL DEFAULT '';
ALTER TABLE cluster_nodes ADD COLUMN instance TEXT NOT NULL DEFAULT '';
