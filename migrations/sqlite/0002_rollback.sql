-- Rollback: what each agent last applied (a config known to run on it) and the error of its
-- last FAILED report, plus the configs such a rollback may send, by hash.
ALTER TABLE agents ADD COLUMN applied_hash TEXT;
ALTER TABLE agents ADD COLUMN last_error TEXT;

-- Rendered config maps of accepted revisions, content-addressed. Kept while the current
-- revision serves them or some agent last applied them; a restarted server can still roll an
-- agent back to a config of an earlier revision.
CREATE TABLE configs (
    hash       TEXT PRIMARY KEY NOT NULL,              -- hex of the config-map hash
    config_map TEXT NOT NULL,                          -- JSON: key -> {content_type, body}
    revision   TEXT NOT NULL,                          -- the revision that first served it
    time       INTEGER NOT NULL
) STRICT;
