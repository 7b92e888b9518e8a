/**
 * Confluent Schema Registry wire format, encoded locally: magic byte 0, the schema id as a 4-byte
 * big-endian integer, then the Avro binary body. The 5-byte header is built once per schema id; no
 * registry round trip per message (the id comes from {@link registerSensorSchema} once per subject).
 */
import type avro from "avsc";
import type { SensorReading } from "../schemas/index.ts";

export const WIRE_MAGIC_BYTE = 0;
export const WIRE_HEADER_BYTES = 5;

/** The 5-byte header for a schema id. */
export function wireHeader(schemaId: number): Buffer {
  if (!Number.isInteger(schemaId) || schemaId < 0 || schemaId > 0x7fffffff) throw new Error(`schema id must be a non-negative int32, got ${schemaId}`);
  const header = Buffer.alloc(WIRE_HEADER_BYTES);
  header.writeUInt8(WIRE_MAGIC_BYTE, 0);
  header.writeInt32BE(schemaId, 1);
  return header;
}

export interface WireEncoder {
  readonly schemaId: number;
  /** Wire bytes of one reading; throws (naming the equipment) if the reading does not fit the schema. */
  encode(reading: SensorReading): Buffer;
}

/** An encoder for one schema id and its parsed avsc type (both obtained once, at start-up). */
export function createWireEncoder(schemaId: number, type: avro.Type): WireEncoder {
  const header = wireHeader(schemaId);
  return {
    schemaId,
    encode(reading: SensorReading): Buffer {
      let body: Buffer;
      try {
        body = type.toBuffer(reading);
      } catch (err) {
        throw new Error(
          `cannot Avro-encode the reading of ${JSON.stringify(reading?.equipment_id)} at ${reading?.time}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      return Buffer.concat([header, body], WIRE_HEADER_BYTES + body.length);
    },
  };
}

/** One-off convenience; prefer {@link createWireEncoder} in loops. */
export function encodeSensorReading(reading: SensorReading, schemaId: number, type: avro.Type): Buffer {
  return createWireEncoder(schemaId, type).encode(reading);
}

/** Split wire bytes into schema id and body (tests, debugging). */
export function parseWire(buf: Buffer): { schemaId: number; body: Buffer } {
  if (buf.length < WIRE_HEADER_BYTES) throw new Error(`wire message of ${buf.length} bytes is shorter than the 5-byte header`);
  if (buf.readUInt8(0) !== WIRE_MAGIC_BYTE) throw new Error(`wire message starts with ${buf.readUInt8(0)}, not the magic byte 0`);
  return { schemaId: buf.readInt32BE(1), body: buf.subarray(WIRE_HEADER_BYTES) };
}
