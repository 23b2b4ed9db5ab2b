-- scimsync store, version 6: what identified each deleted user, so that the account policy
-- `reprovision_deleted = false` can refuse to provision a deleted account again (its
-- userName or externalId coming back in a create). Kept for every delete, so turning the
-- policy on later covers earlier deletions too.
CREATE TABLE deleted_accounts (
    resource_id  TEXT NOT NULL,
    user_name_ci TEXT,
    external_id  TEXT,
    deleted_at   TEXT NOT NULL
);
CREATE INDEX deleted_accounts_user_name ON deleted_accounts (user_name_ci) WHERE user_name_ci IS NOT NULL;
CREATE INDEX deleted_accounts_external_id ON deleted_accounts (external_id) WHERE external_id IS NOT NULL;
