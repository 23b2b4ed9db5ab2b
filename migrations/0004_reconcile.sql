-- scimsync store, version 4: reconciliation — what we last applied to the app per resource,
-- sync runs and their drift reports.

-- What the app was last told about a resource (the attributes of the version a successful
-- delivery sent): the third side of the three-way comparison that tells "edited in the app"
-- from "not applied yet".
ALTER TABLE id_map ADD COLUMN applied TEXT;
ALTER TABLE id_map ADD COLUMN applied_version INTEGER;
-- The full sync matches the app's listing to our resources by the app's id.
CREATE INDEX id_map_app ON id_map (resource_kind, app_id);

-- One row per sync run. `status`: running -> ok | failed; `summary` (JSON) holds the counts
-- by kind, the new/resolved counts and what repair did or refused.
CREATE TABLE sync_runs (
    id          INTEGER PRIMARY KEY,
    trigger     TEXT NOT NULL,               -- schedule | catch_up | manual
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed')),
    error       TEXT,
    summary     TEXT
);

-- The drift report of a run: one row per difference. `change` says how it relates to the
-- previous run's report: new, ongoing, or resolved (then copied from the previous report).
CREATE TABLE drift_items (
    run_id        INTEGER NOT NULL REFERENCES sync_runs (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    resource_kind TEXT    NOT NULL,
    resource_id   TEXT,
    app_id        TEXT,
    name          TEXT    NOT NULL,
    attribute     TEXT,
    ours          TEXT    NOT NULL,          -- JSON
    app           TEXT    NOT NULL,          -- JSON
    cause         TEXT    NOT NULL,
    change        TEXT    NOT NULL CHECK (change IN ('new', 'ongoing', 'resolved')),
    repair        TEXT    NOT NULL,          -- none | queued | protected | refused_limit | not_repairable
    fingerprint   TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
