/**
 * Decode: Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro body) → a
 * SensorReading resolved from the producer's writer schema to our reader schema, so older and
 * newer compatible producers both work.
 *
 * Schemas are fetched once per id (never per message): {@link AvroDecoder.prepare} is awaited once
 * per batch for the ids it has not seen, then {@link AvroDecoder.decode} is synchronous. Ids the
 * registry does not know are cached as unknown for `unknownTtlMs`, so a flood of messages naming a
 * bogus id costs one registry call per TTL, not one per message.
 */
import avro from "avsc";
import type { SensorReading } from "../../schemas/index.ts";

export const MAGIC_BYTE = 0;
export const HEADER_BYTES = 5;

export type DecodeResult =
  | { ok: true; value: SensorReading; schemaId: number }
  | { ok: false; reason: string; message: string; schemaId?: number };

/** Looks a writer schema up by id: a Type, `undefined` if the registry does not know the id; throws on transient failure. */
export type SchemaLookup = (id: number) => Promise<avro.Type | undefined>;

type CacheEntry =
  | { kind: "ok"; resolver: avro.Resolver }
  | { kind: "unknown"; until: number }
  | { kind: "incompatible"; message: string };

export interface DecoderOptions {
  unknownTtlMs: number;
  now?: () => number;
}

export function parseFrame(buf: Buffer | null): { ok: true; schemaId: number; body: Buffer } | { ok: false; reason: string; message: string } {
  if (buf === null || buf.length === 0) return { ok: false, reason: "empty_payload", message: "record has no value (tombstone or empty payload)" };
  if (buf[0] !== MAGIC_BYTE) {
    return {
      ok: false,
      reason: "bad_magic_byte",
      message: `first byte is 0x${buf[0]!.toString(16).padStart(2, "0")}, not the Confluent wire-format magic byte 0x00 (is the producer using the schema registry serializer?)`,
    };
  }
  if (buf.length < HEADER_BYTES) {
    return { ok: false, reason: "short_frame", message: `${buf.length}-byte payload is shorter than the 5-byte wire-format header` };
  }
  return { ok: true, schemaId: buf.readUInt32BE(1), body: buf.subarray(HEADER_BYTES) };
}

/** The schema id of a well-formed frame, else null. */
export function schemaIdOf(buf: Buffer | null): number | null {
  return buf && buf.length >= HEADER_BYTES && buf[0] === MAGIC_BYTE ? buf.readUInt32BE(1) : null;
}

export class AvroDecoder {
  private readonly cache = new Map<number, CacheEntry>();
  private readonly now: () => number;
  /** Registry lookups made (for metrics and for the bounded-calls test). */
  lookups = 0;

  constructor(
    private readonly reader: avro.Type,
    private readonly lookup: SchemaLookup,
    private readonly opts: DecoderOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  private needsLookup(id: number): boolean {
    const e = this.cache.get(id);
    return e === undefined || (e.kind === "unknown" && e.until <= this.now());
  }

  /** Fetch the writer schemas of `ids` not cached yet. Throws (retriable) if the registry is unreachable. */
  async prepare(ids: Iterable<number>): Promise<void> {
    const missing = [...new Set(ids)].filter((id) => this.needsLookup(id));
    await Promise.all(
      missing.map(async (id) => {
        this.lookups++;
        const writer = await this.lookup(id);
        if (writer === undefined) {
          this.cache.set(id, { kind: "unknown", until: this.now() + this.opts.unknownTtlMs });
          return;
        }
        try {
          this.cache.set(id, { kind: "ok", resolver: this.reader.createResolver(writer) });
        } catch (err) {
          this.cache.set(id, { kind: "incompatible", message: (err as Error).message });
        }
      }),
    );
  }

  /** Synchronous: every id in the batch must have been prepared. */
  decode(buf: Buffer | null): DecodeResult {
    // Hot path: no frame object and no body sub-buffer per record — the body is read in place.
    if (buf === null || buf.length < HEADER_BYTES || buf[0] !== MAGIC_BYTE) return parseFrame(buf) as DecodeResult;
    const schemaId = buf.readUInt32BE(1);
    const entry = this.cache.get(schemaId);
    if (entry === undefined) throw new Error(`schema id ${schemaId} was not prepared before decode (engine bug)`);
    if (entry.kind === "unknown") {
      return { ok: false, reason: "unknown_schema_id", schemaId, message: `schema id ${schemaId} is not known to the schema registry` };
    }
    if (entry.kind === "incompatible") {
      return { ok: false, reason: "incompatible_schema", schemaId, message: `writer schema ${schemaId} cannot be read as SensorReading: ${entry.message}` };
    }
    try {
      const { value, offset } = this.reader.decode(buf, HEADER_BYTES, entry.resolver);
      if (offset < 0) return { ok: false, reason: "undecodable_body", schemaId, message: "Avro body is truncated" };
      if (offset !== buf.length) {
        return { ok: false, reason: "undecodable_body", schemaId, message: `${buf.length - offset} trailing bytes after the Avro body` };
      }
      return { ok: true, value: value as SensorReading, schemaId };
    } catch (err) {
      return { ok: false, reason: "undecodable_body", schemaId, message: `Avro body does not decode with schema ${schemaId}: ${(err as Error).message}` };
    }
  }

  /** Schema ids named by a batch of payloads (for {@link prepare}). */
  static schemaIds(values: Iterable<Buffer | null>): Set<number> {
    const ids = new Set<number>();
    for (const v of values) {
      if (v && v.length >= HEADER_BYTES && v[0] === MAGIC_BYTE) ids.add(v.readUInt32BE(1));
    }
    return ids;
  }
}
