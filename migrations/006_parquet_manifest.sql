-- The Parquet sink's bookkeeping, for exactly-once files on S3.
--
-- millrace.parquet_files: every file's boundaries, recorded as 'planned' before it is uploaded and
-- marked 'uploaded' (with its size and checksum) in the same transaction that advances the sink's
-- offset. After a crash the worker rebuilds each planned file from exactly these boundaries: same
-- records, same bytes, same key. Ranges of one (topic, partition) never overlap and follow each
-- other without gaps (checked by planFile in sinks/s3-parquet/manifest.ts under an advisory lock).
CREATE TABLE IF NOT EXISTS millrace.parquet_files (
  topic          text        NOT NULL,
  partition      integer     NOT NULL CHECK (partition >= 0),
  first_offset   bigint      NOT NULL CHECK (first_offset >= 0),
  last_offset    bigint      NOT NULL,
  consumer_group text        NOT NULL,
  tenant_id      uuid        NOT NULL,
  bucket         text        NOT NULL,
  object_key     text        NOT NULL,
  status         text        NOT NULL DEFAULT 'planned' CHECK (status IN ('planned', 'uploaded')),
  row_count      integer     NOT NULL CHECK (row_count >= 0),
  byte_size      bigint      CHECK (byte_size >= 0),
  sha256         text        CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  min_time       timestamptz NOT NULL,
  max_time       timestamptz NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  uploaded_at    timestamptz,
  PRIMARY KEY (topic, partition, first_offset),
  UNIQUE (bucket, object_key),
  CHECK (last_offset >= first_offset),
  CHECK (max_time >= min_time),
  CHECK (status = 'planned' OR (byte_size IS NOT NULL AND sha256 IS NOT NULL AND uploaded_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS parquet_files_tenant ON millrace.parquet_files (tenant_id, topic, partition, first_offset);
CREATE INDEX IF NOT EXISTS parquet_files_planned ON millrace.parquet_files (consumer_group, topic, partition, first_offset) WHERE status = 'planned';
ALTER TABLE millrace.parquet_files OWNER TO millrace_owner;
GRANT SELECT, INSERT, UPDATE ON millrace.parquet_files TO millrace_writer;

-- Progress of sinks other than PostgreSQL (whose progress is millrace.consumer_offsets): the next
-- offset each sink still has to write. A sink advances it only from the value it started from (the
-- same fence as consumer_offsets), so a worker that lost the partition cannot move it.
CREATE TABLE IF NOT EXISTS millrace.sink_offsets (
  sink           text    NOT NULL CHECK (sink ~ '^[a-z][a-z0-9_]{0,62}$'),
  consumer_group text    NOT NULL,
  topic          text    NOT NULL,
  partition      integer NOT NULL CHECK (partition >= 0),
  next_offset    bigint  NOT NULL CHECK (next_offset >= 0),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (sink, consumer_group, topic, partition)
);
ALTER TABLE millrace.sink_offsets OWNER TO millrace_owner;
GRANT SELECT, INSERT, UPDATE ON millrace.sink_offsets TO millrace_writer;
