-- When the agent's last APPLIED report (`applied_hash`) was received (Unix ms). One server is
-- the only writer here; the column keeps the record the same as on PostgreSQL, where several
-- replicas' records of one agent are merged by it. NULL: not known (written before this step).
ALTER TABLE agents ADD COLUMN applied_at INTEGER;
