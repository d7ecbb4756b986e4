-- Agent rows are updated in place (HOT: heap-only tuples) when no indexed column changes and
-- the page has room. `written_by` changes on every write, so its index made every update of
-- every agent a new row version in both indexes; the leader's read of the changed rows scans
-- the table instead (tens of thousands of rows, a few milliseconds), once per step.
-- A fill factor below 100 leaves room on each page for the updated row versions.
DROP INDEX IF EXISTS agents_written_by;
ALTER TABLE agents SET (fillfactor = 70);
