-- scimsync store, version 10: a write's cost does not grow with the history or the backlog.
--
-- `outbox_resource` indexed every outbox row by resource id, delivered ones included, and
-- delivered rows are kept. The ids are random UUIDs, so each new row landed on a random leaf
-- of an index that grew by one entry per change forever: past the writer's page cache, every
-- write read a leaf from disk, copied it into its savepoint journal, wrote it to the WAL and
-- checkpointed it (issue 19, item 4). Every query that looks up a resource's rows asks for
-- undelivered ones only (`state != 'done'`, written out in each so SQLite can use this
-- index), so the index now holds only those: as many entries as the queue is long.
DROP INDEX outbox_resource;
CREATE INDEX outbox_open_by_resource ON outbox (resource_id, id) WHERE state != 'done';

-- Before each claim the deletion guard asks whether a deprovisioning is waiting
-- (`outbox::apply_guard`). Without an index that question read every waiting row's JSON, so
-- with a backlog each claim cost as much as the backlog was long. The rows it asks about are
-- few (deprovisionings not delivered yet); this index holds exactly those. Its WHERE is the
-- guard's, term for term, so SQLite can use it.
CREATE INDEX outbox_waiting_deprovisions ON outbox (id)
    WHERE state IN ('pending', 'retry') AND json_extract(payload, '$.deprovision') = 1;
