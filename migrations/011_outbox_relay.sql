-- Exactly-once delivery of the outboxes (dead letters, alert events) to Kafka
-- (sinks/outbox/relay.ts, docs/exactly-once.md "The outbox topics").
--
-- One relay per outbox and database publishes at a time (a session advisory lock). It claims a
-- batch by writing a batch number into relay_batch (committed before anything is sent), sends the
-- batch in one Kafka transaction that also commits the batch number as the offset of a marker
-- consumer group, then marks the rows published. Kafka's transaction makes the records and the
-- marker visible together or not at all, so after a crash the next relay (which fences the old one
-- by its transactional id) reads the marker: rows of batches up to it are published, later claimed
-- rows go out again. relay_id names this database's relays in Kafka (transactional id and marker
-- group), so databases sharing one cluster never fence each other.
CREATE TABLE IF NOT EXISTS millrace.outbox_relays (
  kind     text PRIMARY KEY CHECK (kind IN ('dead_letters', 'alerts')),
  relay_id uuid NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO millrace.outbox_relays (kind) VALUES ('dead_letters'), ('alerts') ON CONFLICT (kind) DO NOTHING;
ALTER TABLE millrace.outbox_relays OWNER TO millrace_owner;
GRANT SELECT ON millrace.outbox_relays TO millrace_writer;

CREATE SEQUENCE IF NOT EXISTS millrace.outbox_relay_batch;
ALTER SEQUENCE millrace.outbox_relay_batch OWNER TO millrace_owner;
GRANT USAGE ON SEQUENCE millrace.outbox_relay_batch TO millrace_writer;

ALTER TABLE millrace.dead_letters ADD COLUMN IF NOT EXISTS relay_batch bigint;
ALTER TABLE millrace.alerts_outbox ADD COLUMN IF NOT EXISTS relay_batch bigint;
CREATE INDEX IF NOT EXISTS dead_letters_in_doubt ON millrace.dead_letters (relay_batch) WHERE published_at IS NULL AND relay_batch IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_outbox_in_doubt ON millrace.alerts_outbox (relay_batch) WHERE published_at IS NULL AND relay_batch IS NOT NULL;
