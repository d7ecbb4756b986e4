-- Several replicas write the same agent's row: an HTTP agent whose polls are balanced one by one
-- reaches each of them, and each writes what it saw. Until this step the last write won, so a
-- replica that had missed the agent's latest reports could put an older rollback target
-- (`applied_hash`) or an older set of failed hashes back. Now each part of the row keeps the
-- newer of the two records (src/store/postgres.rs, UPSERT_AGENTS): the APPLIED report by when it
-- was received (`applied_at`, new here), the agent's last reports by `last_seen`, the send by
-- `sent_at`, and the failed hashes are merged by the function below.

ALTER TABLE agents ADD COLUMN applied_at BIGINT;

-- The union of two records' failed hashes (JSON arrays of hex hashes), without a hash that the
-- other record saw APPLIED after this record's last message (`*_seen`): APPLIED of a hash clears
-- its failure, FAILED of it later sets it again. Written the way gitamp writes the column
-- (sorted, no spaces), so equal sets compare equal as text and the upsert skips this call.
CREATE FUNCTION gitamp_merge_failed(
    a TEXT, a_seen BIGINT, a_applied TEXT, a_applied_at BIGINT,
    b TEXT, b_seen BIGINT, b_applied TEXT, b_applied_at BIGINT
) RETURNS TEXT LANGUAGE SQL IMMUTABLE AS $$
    SELECT COALESCE('[' || string_agg(to_json(h)::text, ',' ORDER BY h COLLATE "C") || ']', '[]')
    FROM (
        SELECT h FROM json_array_elements_text(a::json) AS h
        WHERE NOT COALESCE(h = b_applied AND b_applied_at > a_seen, FALSE)
        UNION
        SELECT h FROM json_array_elements_text(b::json) AS h
        WHERE NOT COALESCE(h = a_applied AND a_applied_at > b_seen, FALSE)
    ) AS merged
$$;
