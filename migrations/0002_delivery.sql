-- scimsync store, version 2: what provisioning needs — every delivery attempt recorded, the
-- app's ids for our resources, and coalescing bookkeeping on the outbox.

-- Rows delivered together with an older row of the same resource (the newer state was sent
-- in its place) point at it; `done_at` says when a row left the queue.
ALTER TABLE outbox ADD COLUMN done_at TEXT;
ALTER TABLE outbox ADD COLUMN coalesced_into INTEGER;

-- Every attempt, successful or not: the history an operator reads with `outbox show`.
CREATE TABLE outbox_attempts (
    id          INTEGER PRIMARY KEY,
    outbox_id   INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    started_at  TEXT    NOT NULL,
    finished_at TEXT    NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('success', 'retry', 'permanent', 'waiting')),
    detail      TEXT
);
CREATE INDEX outbox_attempts_outbox ON outbox_attempts (outbox_id, id);

-- Our resource id -> the app's id for it, learnt when a create succeeds or an existing
-- account is adopted. Kept after our resource is deleted until the app deletion succeeds.
CREATE TABLE id_map (
    resource_id   TEXT PRIMARY KEY,
    resource_kind TEXT NOT NULL,
    app_id        TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX outbox_state_next ON outbox (state, next_attempt_at);
