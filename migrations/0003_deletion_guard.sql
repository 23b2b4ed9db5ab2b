-- scimsync store, version 3: the accidental-deletion guard.
--
-- A new outbox state, `held`: deprovisioning changes (user DELETE, user deactivated, group
-- DELETE) kept back while the guard is tripped, until an operator releases or discards them.
-- SQLite cannot alter a CHECK constraint in place, so the outbox is rebuilt. The connection
-- runs with foreign_keys=ON inside the migration's transaction (where the pragma cannot be
-- switched off), and dropping a parent table deletes its rows first, which would cascade to
-- outbox_attempts: so the attempts are parked in a table without a foreign key, both tables
-- are rebuilt, and the attempts are put back.

CREATE TABLE outbox_new (
    id              INTEGER PRIMARY KEY,          -- commit order; the idempotency key for the app
    resource_kind   TEXT    NOT NULL,
    resource_id     TEXT    NOT NULL,
    op              TEXT    NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    version         INTEGER NOT NULL,             -- resource version this change produced
    payload         TEXT    NOT NULL,             -- JSON: what changed; `deprovision: true` marks one
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'in_flight', 'done', 'retry', 'dead', 'held')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    lease_until     TEXT,
    last_error      TEXT,
    created_at      TEXT    NOT NULL,
    done_at         TEXT,
    coalesced_into  INTEGER
);
INSERT INTO outbox_new (id, resource_kind, resource_id, op, version, payload, state, attempts, next_attempt_at,
                        lease_until, last_error, created_at, done_at, coalesced_into)
    SELECT id, resource_kind, resource_id, op, version, payload, state, attempts, next_attempt_at,
           lease_until, last_error, created_at, done_at, coalesced_into FROM outbox;

CREATE TABLE outbox_attempts_parked AS SELECT * FROM outbox_attempts;
DROP TABLE outbox_attempts;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;

CREATE TABLE outbox_attempts (
    id          INTEGER PRIMARY KEY,
    outbox_id   INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    started_at  TEXT    NOT NULL,
    finished_at TEXT    NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('success', 'retry', 'permanent', 'waiting')),
    detail      TEXT
);
INSERT INTO outbox_attempts (id, outbox_id, started_at, finished_at, outcome, detail)
    SELECT id, outbox_id, started_at, finished_at, outcome, detail FROM outbox_attempts_parked;
DROP TABLE outbox_attempts_parked;

CREATE INDEX outbox_due ON outbox (state, id);
CREATE INDEX outbox_resource ON outbox (resource_id, id);
CREATE INDEX outbox_state_next ON outbox (state, next_attempt_at);
CREATE INDEX outbox_attempts_outbox ON outbox_attempts (outbox_id, id);
-- The guard counts the deprovisioning changes accepted within its window.
CREATE INDEX outbox_created ON outbox (created_at);

-- The guard's one row: `tripped_at` is set when it trips and cleared when an operator
-- releases or discards the held changes; changes up to `reset_after_id` were decided on
-- and no longer count towards the threshold.
CREATE TABLE deletion_guard (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    tripped_at     TEXT,
    trip_count     INTEGER,
    reset_after_id INTEGER NOT NULL DEFAULT 0
);
INSERT INTO deletion_guard (id, tripped_at, reset_after_id) VALUES (1, NULL, 0);
