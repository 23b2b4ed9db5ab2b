-- scimsync store, version 5: the audit log.
--
-- One row per accepted SCIM change (written in the same transaction as the change, so a
-- change without its audit row, or an audit row for a rolled-back change, cannot exist) and
-- per operator action (token create/revoke, outbox release/discard of held changes).
-- `summary` is JSON naming what changed (attribute names, PATCH operation paths, member
-- counts), never values: no password or other secret ever lands here.

CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY,
    at            TEXT    NOT NULL,               -- RFC 3339 UTC, ms: text order is time order
    actor         TEXT    NOT NULL,               -- 'token' (an IdP) or 'cli' (an operator)
    token_id      TEXT,                           -- the authenticated token's public id
    method        TEXT    NOT NULL,               -- POST / PUT / PATCH / DELETE, or the CLI action
    resource_type TEXT    NOT NULL,               -- 'User', 'Group', 'token', 'outbox'
    resource_id   TEXT,
    resource_name TEXT,                           -- userName / displayName when known
    version       INTEGER,                        -- the resource version the change produced
    request_id    TEXT,                           -- the IdP's request id, when it sent one
    summary       TEXT    NOT NULL                -- JSON: what changed, by name
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_resource ON audit_log (resource_id, id);
