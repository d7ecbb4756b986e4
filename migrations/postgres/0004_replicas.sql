-- Several servers on one database (PostgreSQL only). Each live `gitamp serve` process has a row,
-- refreshed by its heartbeat; the leader is whoever holds the advisory lock (src/server/cluster).
-- `source` is the repository and ref every replica must share: a replica started with another
-- one is refused.
CREATE TABLE replicas (
    id             TEXT PRIMARY KEY NOT NULL,
    opamp_address  TEXT NOT NULL,
    api_address    TEXT NOT NULL,
    leader         BOOLEAN NOT NULL DEFAULT FALSE,
    agents         BIGINT NOT NULL DEFAULT 0,
    started_at     BIGINT NOT NULL,
    heartbeat_at   BIGINT NOT NULL,
    -- The accepted revision this replica has fetched and compiled, ready to serve: every
    -- replica switches to a new revision once all live ones are ready (src/server/cluster).
    ready          TEXT
);

-- One row: the source the fleet's replicas serve (repository URL without credentials, ref, path).
CREATE TABLE cluster_source (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    source TEXT NOT NULL
);

-- Which replica holds each agent's connection (NULL: none).
ALTER TABLE agents ADD COLUMN replica TEXT;
