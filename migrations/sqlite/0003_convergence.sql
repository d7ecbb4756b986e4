-- Per-commit convergence: for each accepted revision, its figures as JSON (targeted, applied,
-- failed, rolled back, waiting agents and the push-to-applied histogram), kept for the last
-- revisions like the revision history.
CREATE TABLE convergence (
    revision    TEXT PRIMARY KEY,
    accepted_at INTEGER NOT NULL,
    record      TEXT NOT NULL                -- JSON
) STRICT;
CREATE INDEX convergence_accepted_at ON convergence (accepted_at);
