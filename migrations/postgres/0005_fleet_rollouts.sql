-- Fleet-wide rollouts (PostgreSQL only): the leader steps every rollout over the whole fleet's
-- agents (src/server/cluster/rollouts.rs), reading only the rows written since its last read.
-- `written_by` is the transaction that last wrote the row: a reader that remembers the oldest
-- transaction still running at its last read (pg_snapshot_xmin) misses no row committed since,
-- however the replicas' transactions interleave.
-- `labels_written_by` is the transaction that last wrote its labels: most writes (a config
-- sent, applied) keep them, and the reader parses them only when they may have changed.
ALTER TABLE agents ADD COLUMN written_by xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE agents ADD COLUMN labels_written_by xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX agents_written_by ON agents (written_by);
