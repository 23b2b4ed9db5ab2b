-- scimsync store, version 7: a cheaper index for naming deleted resources.
--
-- `audit_log_resource` indexed every audit record by resource id. The ids are random UUIDs,
-- so each write's record landed on a random leaf of that index: one more page copied into
-- the operation's savepoint journal, written to the WAL and checkpointed per write, about a
-- tenth of the writer's work for a create or PATCH. Its one reader is the status page,
-- which names an outbox row's resource from the audit log once the resource row is gone
-- (src/store/status.rs), and a row goes only with a DELETE, whose record always carries
-- the name it had (written in the delete's own transaction). So only DELETE records are
-- indexed now. (`scimsync audit --resource` matches ids or names and scans either way.)
DROP INDEX audit_log_resource;
CREATE INDEX audit_log_deleted ON audit_log (resource_id, id) WHERE method = 'DELETE';
