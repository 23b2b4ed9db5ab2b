-- Several daemons on one schema (issue 15): who is alive, and who leads.
-- Every time here is the DATABASE's clock (now()), never a node's: the nodes' clocks may
-- disagree, the one server's cannot disagree with itself.

-- One row per daemon that ever started on this schema; a node refreshes heartbeat_at
-- every few seconds, and "live" means a recent heartbeat.
CREATE TABLE cluster_nodes (
    node_id      TEXT PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    listen       TEXT NOT NULL DEFAULT '',
    version      TEXT NOT NULL DEFAULT ''
);

-- The one leader lease: the holder runs what must run once (delivery, the sync scheduler,
-- retention). A node takes it when it is free or expired, keeps it by renewing before
-- expires_at; epoch grows at each change of holder, and the outbox claim checks
-- (holder, epoch, expires_at) in its own transaction, so a stale leader claims nothing.
CREATE TABLE leader_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT NOT NULL DEFAULT '',
    epoch      BIGINT NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
INSERT INTO leader_lease (id) VALUES (1);
