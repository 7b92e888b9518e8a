/**
 * Reading a tenant's `alerts-{tenant_id}` topic back in end-to-end tests, and comparing it with the
 * alert events in the database (`alerts`, `millrace.alerts_outbox`).
 */
import type { Admin, Kafka } from "kafkajs";
import type pg from "pg";
import { expect } from "vitest";
import type { AlertEvent } from "../../schemas/generated.ts";
import { decodeAlertEvent } from "../../sinks/alerts/encode.ts";
import { consumeToSentinels, endOffsets, header } from "./kafka.ts";
import { waitUntil } from "./wait.ts";

export interface AlertMessage {
  partition: number;
  offset: string;
  key: string | undefined;
  /** The `millrace.alert.event_id` header. */
  eventIdHeader: string | undefined;
  event: AlertEvent;
}

/** The tenant's events in the `alerts` table, as `{alert_id}/{seq}` event ids with their step, in (alert_id, seq) order. */
export async function alertEventsInTable(pool: pg.Pool, tenantId: string): Promise<Array<{ eventId: string; alertId: string; seq: number; kind: string; step: string; severity: string }>> {
  const r = await pool.query<{ alert_id: string; seq: number; kind: string; step: string; severity: string }>(
    "SELECT alert_id::text, seq, kind, step, severity FROM alerts WHERE tenant_id = $1 ORDER BY alert_id, seq",
    [tenantId],
  );
  return r.rows.map((x) => ({ eventId: `${x.alert_id}/${x.seq}`, alertId: x.alert_id, seq: x.seq, kind: x.kind, step: x.step, severity: x.severity }));
}

/** Bounded wait until the tenant has `atLeast` outbox rows and every one is marked published. */
export async function waitOutboxPublished(pool: pg.Pool, tenantId: string, atLeast: number, timeoutMs = 60_000): Promise<void> {
  await waitUntil(
    `the outbox of tenant ${tenantId} to hold ≥ ${atLeast} events, all published`,
    async () => {
      const r = await pool.query<{ n: number; unpublished: number }>(
        "SELECT count(*)::int AS n, count(*) FILTER (WHERE published_at IS NULL)::int AS unpublished FROM millrace.alerts_outbox WHERE tenant_id = $1",
        [tenantId],
      );
      return r.rows[0]!.n >= atLeast && r.rows[0]!.unpublished === 0;
    },
    timeoutMs,
  );
}

/**
 * Every committed record on the topic (call it once nothing more is being published, e.g. after
 * {@link waitOutboxPublished}): read up to a sentinel per partition ({@link consumeToSentinels}),
 * because a transactional topic's end offsets also count commit markers and aborted attempts.
 */
export async function readAlertsTopic(kafka: Kafka, admin: Admin, topic: string, timeoutMs = 60_000): Promise<AlertMessage[]> {
  if (!(await admin.listTopics()).includes(topic)) return [];
  const ends = await endOffsets(admin, topic);
  if ([...ends.values()].every((high) => high === 0)) return [];
  return (await consumeToSentinels(kafka, admin, topic, timeoutMs)).map((m) => ({
    partition: m.partition,
    offset: m.offset,
    key: m.key?.toString("utf8"),
    eventIdHeader: header(m, "millrace.alert.event_id"),
    event: decodeAlertEvent(m.value!).event,
  }));
}

/**
 * The topic tells the same story as the table: the distinct `millrace.alert.event_id` headers are
 * exactly the table's event ids; every message carries one, matching its body's event_id, keyed by
 * its alert_id; and no contradictory event (two messages with one event id always have the same
 * step, seq, severity and time).
 */
export function expectTopicMatchesTable(messages: readonly AlertMessage[], tableEventIds: readonly string[]): void {
  for (const m of messages) {
    expect(m.eventIdHeader, `message ${m.partition}/${m.offset} carries an event id header`).toBeDefined();
    expect(m.event.event_id).toBe(m.eventIdHeader);
    expect(m.key).toBe(m.event.alert_id);
    expect(tableEventIds).toContain(m.eventIdHeader);
  }
  expect(new Set(messages.map((m) => m.eventIdHeader))).toEqual(new Set(tableEventIds));
  const first = new Map<string, AlertEvent>();
  for (const m of messages) {
    const e = m.event;
    const seen = first.get(e.event_id);
    if (seen === undefined) first.set(e.event_id, e);
    else expect({ step: e.step, seq: e.seq, severity: e.severity, time: e.time, alert: e.alert_id }, `repeat of ${e.event_id} contradicts the first`).toEqual({ step: seen.step, seq: seen.seq, severity: seen.severity, time: seen.time, alert: seen.alert_id });
  }
}

/** The topic is exactly once (sinks/outbox/relay.ts): one message per event of the table. */
export function expectAlertMessageCount(messages: readonly AlertMessage[], tableEventIds: readonly string[]): void {
  expect(messages.map((m) => m.eventIdHeader).sort()).toEqual([...tableEventIds].sort());
}

/** Lines `name{labels} value` of a Prometheus text exposition whose labels contain `labelFilter`; summed. */
export function metricSum(exposition: string, name: string, labelFilter: string): number {
  let sum = 0;
  for (const line of exposition.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!line.includes(labelFilter)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}
