-- A rollout's member list apart from its progress, as on PostgreSQL (its migration 0011): the
-- list is written only when it changed (NULL in a write: keep). NULL here: the row was written
-- before this step and its `progress` holds the list.
ALTER TABLE rollouts ADD COLUMN members TEXT;
