-- scimsync store, version 8: superseded changes, and the target deliveries were made to.
--
-- 1. A delivery attempt may now be `superseded`: a repair that sends a resource's whole
--    current state marks the dead-lettered changes it makes obsolete as done, coalesced into
--    the repair's change, with an attempt saying so. SQLite cannot alter a CHECK constraint in
--    place, so the attempts table (a child of the outbox: dropping it cascades nothing) is
--    rebuilt.
-- 2. `delivery_target`: which target the delivered changes went to ('dry-run', or the kind
--    and base URL of the app). When the daemon starts on a real target after a dry run, what
--    the dry run "delivered" never reached that app: every resource is queued for it again.

CREATE TABLE outbox_attempts_new (
    id          INTEGER PRIMARY KEY,
    outbox_id   INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    started_at  TEXT    NOT NULL,
    finished_at TEXT    NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('success', 'retry', 'permanent', 'waiting', 'superseded')),
    detail      TEXT
);
INSERT INTO outbox_attempts_new (id, outbox_id, started_at, finished_at, outcome, detail)
    SELECT id, outbox_id, started_at, finished_at, outcome, detail FROM outbox_attempts;
DROP TABLE outbox_attempts;
ALTER TABLE outbox_attempts_new RENAME TO outbox_attempts;
CREATE INDEX outbox_attempts_outbox ON outbox_attempts (outbox_id, id);

CREATE TABLE delivery_target (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    identity TEXT NOT NULL,
    since    TEXT NOT NULL
);
