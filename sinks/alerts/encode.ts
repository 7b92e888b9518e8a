/**
 * Alert events as Kafka records (pure): the AlertEvent Avro record (schemas/alert-event.avsc) in
 * the Confluent wire format, encoded locally with a schema id obtained once per subject.
 *
 *   key        alert_id — every step of one alarm goes to one partition, so consumers see them in order
 *   value      magic byte 0, schema id (int32 BE), Avro body
 *   timestamp  the event time (the causing reading's time)
 *   headers    millrace.alert.event_id (`{alert_id}/{seq}`: each event is delivered once, and this
 *              names it), millrace.alert.step, millrace.alert.severity, millrace.tenant
 */
import { readFileSync } from "node:fs";
import type avro from "avsc";
import { wireHeader } from "../../produce/encode.ts";
import { parseAvroSchema } from "../../schemas/index.ts";
import type { AlertEvent } from "../../schemas/generated.ts";

export const ALERT_EVENT_SCHEMA_TEXT = readFileSync(new URL("../../schemas/alert-event.avsc", import.meta.url), "utf8");

let parsed: avro.Type | undefined;

/** The AlertEvent type, parsed once per process. */
export function alertEventType(): avro.Type {
  parsed ??= parseAvroSchema(ALERT_EVENT_SCHEMA_TEXT);
  return parsed;
}

/** TopicNameStrategy: the value subject of an alerts topic. */
export function alertSubject(topic: string): string {
  return `${topic}-value`;
}

export interface AlertRecord {
  key: string;
  value: Buffer;
  timestamp: string;
  headers: Record<string, string>;
}

/** An event that does not fit the schema (a bug upstream: never retried). */
export class AlertEncodeError extends Error {
  override readonly name = "AlertEncodeError";
}

export function encodeAlertEvent(event: AlertEvent, schemaId: number, type: avro.Type = alertEventType()): AlertRecord {
  const bad: string[] = [];
  if (!type.isValid(event, { errorHook: (path, value) => bad.push(`${path.join(".") || "(record)"}=${JSON.stringify(value)}`) })) {
    throw new AlertEncodeError(`alert event ${JSON.stringify(event?.event_id)} does not fit schemas/alert-event.avsc: ${bad.slice(0, 5).join(", ")}`);
  }
  const body = type.toBuffer(event);
  return {
    key: event.alert_id,
    value: Buffer.concat([wireHeader(schemaId), body]),
    timestamp: String(event.time),
    headers: {
      "millrace.alert.event_id": event.event_id,
      "millrace.alert.step": event.step,
      "millrace.alert.severity": event.severity,
      "millrace.tenant": event.tenant_id,
    },
  };
}

/** Wire bytes → event (tests, debugging). */
export function decodeAlertEvent(value: Buffer, type: avro.Type = alertEventType()): { schemaId: number; event: AlertEvent } {
  if (value.length < 5 || value.readUInt8(0) !== 0) throw new Error("not a Confluent wire-format message");
  return { schemaId: value.readInt32BE(1), event: type.fromBuffer(value.subarray(5)) as AlertEvent };
}
