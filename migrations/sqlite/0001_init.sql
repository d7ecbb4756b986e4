-- gitamp agent-state store, SQLite flavour. Times are Unix milliseconds (INTEGER); JSON is TEXT.
-- The PostgreSQL flavour (migrations/postgres) keeps the same table and column names.

CREATE TABLE agents (
    instance_uid          TEXT PRIMARY KEY NOT NULL,   -- hex
    labels                TEXT NOT NULL DEFAULT '{}',  -- JSON object string -> string
    description           TEXT NOT NULL DEFAULT 'null',-- JSON (AgentDescription as the fleet keeps it)
    capabilities          INTEGER NOT NULL DEFAULT 0,
    health                TEXT NOT NULL DEFAULT 'null',-- JSON
    reported_hash         TEXT,                        -- last_remote_config_hash, hex
    remote_config_status  TEXT,
    remote_config_error   TEXT,
    effective_config_hash TEXT,
    sent_hash             TEXT,
    sent_at               INTEGER,
    failed_hashes         TEXT NOT NULL DEFAULT '[]',  -- JSON array of hex hashes
    connected             INTEGER NOT NULL DEFAULT 0,
    last_seen             INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE revisions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    revision     TEXT NOT NULL,
    time         INTEGER NOT NULL,
    accepted     INTEGER NOT NULL,
    diagnostics  TEXT NOT NULL DEFAULT '[]',           -- JSON
    source_error TEXT
) STRICT;
CREATE INDEX revisions_accepted ON revisions (accepted, id);

-- The revision being served, so a restart serves it before the first sync finishes.
CREATE TABLE current_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision TEXT NOT NULL,
    time     INTEGER NOT NULL
) STRICT;

CREATE TABLE rollouts (
    configuration TEXT NOT NULL,
    target_hash   TEXT NOT NULL,
    progress      TEXT NOT NULL,                      -- opaque JSON from the planner
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (configuration, target_hash)
) STRICT;

CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    time      INTEGER NOT NULL,
    agent_uid TEXT,
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL
) STRICT;
CREATE INDEX events_agent ON events (agent_uid, id);
