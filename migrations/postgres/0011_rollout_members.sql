-- A rollout's member list apart from its progress. The list is every agent in scope (60,000
-- members: ~2.3 MB of text) and rarely changes; the counts move at every step of the leader,
-- which rewrote the whole record every 2 s in a rollout, and every replica read it all back.
-- The leader now writes `members` only when the list changed (NULL in its write: keep), and
-- `members_at` says when, so a replica re-reads the list only then. NULL `members`: the row
-- was written before this step and its `progress` holds the list.
ALTER TABLE rollouts ADD COLUMN members text;
ALTER TABLE rollouts ADD COLUMN members_at bigint NOT NULL DEFAULT 0;
