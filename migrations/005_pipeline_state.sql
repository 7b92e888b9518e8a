-- Pipeline bookkeeping, written by the worker in the same transaction as the rows it covers.

-- Source of truth for consumer progress: on assignment the worker resumes from next_offset here,
-- and a batch commits only if next_offset still equals the batch's first offset (a fence against a
-- worker that lost the partition in a rebalance).
CREATE TABLE IF NOT EXISTS millrace.consumer_offsets (
  consumer_group text    NOT NULL,
  topic          text    NOT NULL,
  partition      integer NOT NULL CHECK (partition >= 0),
  next_offset    bigint  NOT NULL CHECK (next_offset >= 0),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, topic, partition)
);
ALTER TABLE millrace.consumer_offsets OWNER TO millrace_owner;
GRANT SELECT, INSERT, UPDATE ON millrace.consumer_offsets TO millrace_writer;

-- Every record that could not be stored, recorded once with its reason and original bytes (an
-- outbox: the worker publishes each to the dead-letter topic and marks it published).
CREATE TABLE IF NOT EXISTS millrace.dead_letters (
  source_topic     text    NOT NULL,
  source_partition integer NOT NULL,
  source_offset    bigint  NOT NULL,
  tenant_id        uuid,
  reason           text    NOT NULL,
  stage            text    NOT NULL,
  message          text    NOT NULL,
  schema_id        integer,
  record_key       bytea,
  record_value     bytea,
  record_headers   jsonb   NOT NULL DEFAULT '{}'::jsonb,
  record_timestamp timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  published_at     timestamptz,
  PRIMARY KEY (source_topic, source_partition, source_offset)
);
CREATE INDEX IF NOT EXISTS dead_letters_unpublished ON millrace.dead_letters (created_at) WHERE published_at IS NULL;
ALTER TABLE millrace.dead_letters OWNER TO millrace_owner;
GRANT SELECT, INSERT, UPDATE ON millrace.dead_letters TO millrace_writer;
