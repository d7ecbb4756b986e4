-- The last connection-settings offer sent to each agent (hash, digest of its `opamp` part,
-- heartbeat interval: gitamp-opamp's SentOffer as text). A restarted server reads it and does
-- not offer the same again: an agent that accepts `opamp` offers (the collector's supervisor)
-- reconnects on every one. NULL: nothing offered yet.
ALTER TABLE agents ADD COLUMN settings_offer TEXT;
