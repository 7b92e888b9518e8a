-- Moving a tenant between databases (tenants/move.ts, docs/tenancy.md "Moving a tenant").
--
-- When a tenant's store moves, its offsets rows in the old store become tombstones:
-- next_offset = -1 (which no batch ever expects, so every late batch or Parquet upload of an old
-- owner is fenced there) and moved_next_offset = the value it had (so a rerun of an interrupted
-- move copies the real value, not the tombstone). A worker that reads -1 re-reads the tenant's
-- database reference and waits until it points elsewhere.
ALTER TABLE millrace.consumer_offsets DROP CONSTRAINT IF EXISTS consumer_offsets_next_offset_check;
ALTER TABLE millrace.consumer_offsets ADD CONSTRAINT consumer_offsets_next_offset_check CHECK (next_offset >= 0 OR next_offset = -1);
ALTER TABLE millrace.consumer_offsets ADD COLUMN IF NOT EXISTS moved_next_offset bigint CHECK (moved_next_offset >= 0);
ALTER TABLE millrace.sink_offsets DROP CONSTRAINT IF EXISTS sink_offsets_next_offset_check;
ALTER TABLE millrace.sink_offsets ADD CONSTRAINT sink_offsets_next_offset_check CHECK (next_offset >= 0 OR next_offset = -1);
ALTER TABLE millrace.sink_offsets ADD COLUMN IF NOT EXISTS moved_next_offset bigint CHECK (moved_next_offset >= 0);
