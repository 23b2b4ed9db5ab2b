-- scimsync store, version 1: resources, their indexes, memberships, the outbox, tokens.
-- Memberships are rows, not part of the group's JSON, so that adding one member to a
-- 10,000-member group writes one row instead of rewriting the group.

CREATE TABLE resources (
    seq             INTEGER PRIMARY KEY,          -- insertion order: the stable list order
    id              TEXT    NOT NULL UNIQUE,      -- server-assigned (RFC 7643 §3.1), a UUID
    kind            TEXT    NOT NULL CHECK (kind IN ('User', 'Group')),
    user_name_ci    TEXT,                         -- lower(userName): unique per RFC 7643 §4.1.1
    display_name_ci TEXT,                         -- lower(displayName), for `displayName eq`
    external_id     TEXT,                         -- caseExact (RFC 7643 §3.1)
    version         INTEGER NOT NULL,             -- weak ETag W/"<version>"
    created         TEXT    NOT NULL,             -- RFC 3339 UTC
    last_modified   TEXT    NOT NULL,
    data            TEXT    NOT NULL              -- JSON object: the client-settable attributes
);
-- Lists scan one kind in creation order; count(*) and OFFSET walk this index, not the rows.
CREATE INDEX resources_kind_seq ON resources (kind, seq);
CREATE UNIQUE INDEX resources_user_name ON resources (kind, user_name_ci) WHERE user_name_ci IS NOT NULL;
CREATE INDEX resources_external_id ON resources (kind, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX resources_display_name ON resources (kind, display_name_ci) WHERE display_name_ci IS NOT NULL;

CREATE TABLE resource_emails (
    resource_seq INTEGER NOT NULL REFERENCES resources (seq) ON DELETE CASCADE,
    value_ci     TEXT    NOT NULL,
    type_ci      TEXT
);
CREATE INDEX resource_emails_value ON resource_emails (value_ci);
CREATE INDEX resource_emails_resource ON resource_emails (resource_seq);

CREATE TABLE group_members (
    group_seq  INTEGER NOT NULL REFERENCES resources (seq) ON DELETE CASCADE,
    member_seq INTEGER NOT NULL REFERENCES resources (seq) ON DELETE CASCADE,
    display    TEXT,                              -- as the IdP sent it; NULL: the member's name
    PRIMARY KEY (group_seq, member_seq)
) WITHOUT ROWID;
CREATE INDEX group_members_member ON group_members (member_seq, group_seq);

-- One row per accepted change, written in the same transaction as the change itself.
-- States: pending -> in_flight (lease) -> done | retry (next_attempt_at) | dead.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,          -- commit order; the idempotency key for the app
    resource_kind   TEXT    NOT NULL,
    resource_id     TEXT    NOT NULL,
    op              TEXT    NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    version         INTEGER NOT NULL,             -- resource version this change produced
    payload         TEXT    NOT NULL,             -- JSON: what changed (e.g. member deltas)
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'in_flight', 'done', 'retry', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    lease_until     TEXT,
    last_error      TEXT,
    created_at      TEXT    NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, id);
CREATE INDEX outbox_resource ON outbox (resource_id, id);

CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,                -- short public id, shown in logs and lists
    label        TEXT NOT NULL,
    hash         BLOB NOT NULL UNIQUE,            -- SHA-256 of the token; the token is never stored
    created_at   TEXT NOT NULL,
    revoked_at   TEXT
);
