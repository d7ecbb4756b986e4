-- The leader counts the fleet's agents once per heartbeat and publishes the count in its row;
-- the other replicas read it with the listing instead of each scanning `agents` every beat.
ALTER TABLE replicas ADD COLUMN fleet_agents BIGINT;

-- No query filters, joins or sorts on these columns, so the planner never reads their
-- statistics; ANALYZE (which autovacuum runs after every rollout's updates) then need not
-- sample and sort their values (JSON documents, hashes, messages).
ALTER TABLE agents
    ALTER COLUMN labels SET STATISTICS 0,
    ALTER COLUMN description SET STATISTICS 0,
    ALTER COLUMN health SET STATISTICS 0,
    ALTER COLUMN packages SET STATISTICS 0,
    ALTER COLUMN failed_hashes SET STATISTICS 0,
    ALTER COLUMN reported_hash SET STATISTICS 0,
    ALTER COLUMN remote_config_status SET STATISTICS 0,
    ALTER COLUMN remote_config_error SET STATISTICS 0,
    ALTER COLUMN effective_config_hash SET STATISTICS 0,
    ALTER COLUMN sent_hash SET STATISTICS 0,
    ALTER COLUMN sent_at SET STATISTICS 0,
    ALTER COLUMN last_error SET STATISTICS 0,
    ALTER COLUMN last_seen SET STATISTICS 0,
    ALTER COLUMN capabilities SET STATISTICS 0;
