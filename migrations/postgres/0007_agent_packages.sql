-- Fleet-wide agent upgrades (PostgreSQL only): each replica writes what its agents report of
-- their packages (the planner's AgentPackages, JSON), and the leader steps every upgrade
-- rollout over the whole fleet from it, with the same rule a single server uses. NULL: no
-- package facts yet (an agent that does not accept packages, or an older replica's row).
ALTER TABLE agents ADD COLUMN packages TEXT;

-- The leader's upgrade rollouts (configuration -> the rollout of its pinned agent version,
-- JSON), adopted by every replica as the config rollouts in `rollouts` are. One per
-- configuration: a rollout superseded by another version is replaced, not kept.
CREATE TABLE upgrade_rollouts (
    configuration TEXT PRIMARY KEY,
    progress      TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);
