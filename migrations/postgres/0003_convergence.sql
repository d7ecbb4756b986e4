-- Per-commit convergence (as migrations/sqlite/0003).
CREATE TABLE convergence (
    revision    TEXT PRIMARY KEY,
    accepted_at BIGINT NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX convergence_accepted_at ON convergence (accepted_at);
