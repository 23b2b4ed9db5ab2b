-- scimsync store on PostgreSQL, version 3: SQLite's 0010 (a write's cost does not grow with
-- the history or the backlog; ../0010_open_rows_by_resource.sql says why).
--
-- Every lookup of a resource's outbox rows asks for undelivered ones only (`state <> 'done'`,
-- written out in each query so the planner can use this partial index), so the index holds
-- as many entries as the queue is long, not one per change ever made.
DROP INDEX outbox_resource;
CREATE INDEX outbox_open_by_resource ON outbox (resource_id, id) WHERE state <> 'done';

-- The deletion guard's question before each claim ("is a deprovisioning waiting?") reads
-- only these rows; its WHERE is the guard's, term for term.
CREATE INDEX outbox_waiting_deprovisions ON outbox (id)
    WHERE state IN ('pending', 'retry') AND payload @> '{"deprovision": true}'::jsonb;
