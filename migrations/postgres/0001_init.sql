-- gitamp agent-state store, PostgreSQL flavour: the same tables and columns as
-- migrations/sqlite, step for step. Times are Unix milliseconds (BIGINT); JSON is TEXT, so both
-- backends read and write it the same way.
--
-- labels, description and health are nullable here: a multi-row upsert writes NULL for "keep the
-- stored value" and the update keeps it with COALESCE; readers see NULL as the SQLite default.

CREATE TABLE agents (
    instance_uid          TEXT PRIMARY KEY NOT NULL,
    labels                TEXT,                        -- JSON object; NULL reads as '{}'
    description           TEXT,                        -- JSON; NULL reads as 'null'
    capabilities          BIGINT NOT NULL DEFAULT 0,
    health                TEXT,                        -- JSON; NULL reads as 'null'
    reported_hash         TEXT,
    remote_config_status  TEXT,
    remote_config_error   TEXT,
    effective_config_hash TEXT,
    sent_hash             TEXT,
    sent_at               BIGINT,
    failed_hashes         TEXT NOT NULL DEFAULT '[]',
    connected             BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen             BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE revisions (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    revision     TEXT NOT NULL,
    time         BIGINT NOT NULL,
    accepted     BOOLEAN NOT NULL,
    diagnostics  TEXT NOT NULL DEFAULT '[]',
    source_error TEXT
);
CREATE INDEX revisions_accepted ON revisions (accepted, id);

CREATE TABLE current_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision TEXT NOT NULL,
    time     BIGINT NOT NULL
);

CREATE TABLE rollouts (
    configuration TEXT NOT NULL,
    target_hash   TEXT NOT NULL,
    progress      TEXT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (configuration, target_hash)
);

CREATE TABLE events (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time      BIGINT NOT NULL,
    agent_uid TEXT,
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL
);
CREATE INDEX events_agent ON events (agent_uid, id);
