-- Rollback (as migrations/sqlite/0002): what each agent last applied, its last error, and the
-- rendered configs a rollback may send, by hash.
ALTER TABLE agents ADD COLUMN applied_hash TEXT;
ALTER TABLE agents ADD COLUMN last_error TEXT;

CREATE TABLE configs (
    hash       TEXT PRIMARY KEY NOT NULL,
    config_map TEXT NOT NULL,
    revision   TEXT NOT NULL,
    time       BIGINT NOT NULL
);
