/**
 * The TimescaleDB/PostgreSQL sink against a real PostgreSQL: exact round trip, COPY escaping,
 * replays and in-batch duplicates (COPY, then insert mode), time zones, a data error in the middle
 * of a batch, and the offset fence (failure classes 1, 8, 9, 10, 11).
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StoredReading } from "../../pipelines/reading.ts";
import { FencedError } from "../../lib/errors.ts";
import type pg from "pg";
import { INSERT_MODE_BATCHES, TimescaleWriter, type BatchCommit, type DeadLetterRow } from "../../sinks/timescale/writer.ts";
import { createPool } from "../../sinks/timescale/pool.ts";
import { createTestDatabase, insertTenant, type TestDatabase } from "../helpers/db.ts";

const GROUP = "sink-test";
const TOPIC = "sensor-data-test";

function dl(row: StoredReading, r: { reason: string; stage: string; message: string }): DeadLetterRow {
  return {
    sourceTopic: TOPIC,
    sourcePartition: 0,
    sourceOffset: row.offset,
    tenantId: row.tenantId,
    reason: r.reason,
    stage: r.stage,
    message: r.message,
    schemaId: null,
    key: null,
    value: Buffer.from(JSON.stringify(row)),
    headers: {},
    timestamp: null,
  };
}

describe("timescale sink", () => {
  let db: TestDatabase;
  let writer: TimescaleWriter;
  const tenant = randomUUID();
  let partition = 0;

  const rows = (n: number, base: number, start = 0): StoredReading[] =>
    Array.from({ length: n }, (_, i) => ({
      offset: start + i,
      time: base + i * 1000,
      tenantId: tenant,
      equipmentId: `eq-${i % 7}`,
      facilityId: "fac-1",
      temperature: i % 5 === 0 ? null : 20 + i / 8,
      vibration: Math.fround(0.01 * i),
      pressure: i % 3 === 0 ? null : 1 + i / 1024,
      flow_rate: null,
    }));

  const batch = (rs: StoredReading[], p: number, expected: number, extra: Partial<BatchCommit> = {}): BatchCommit => ({
    consumerGroup: GROUP,
    topic: TOPIC,
    partition: p,
    tenantId: tenant,
    expectedOffset: expected,
    nextOffset: (rs.at(-1)?.offset ?? expected - 1) + 1,
    rows: rs,
    deadLetters: [],
    deadLetterFor: dl,
    ...extra,
  });

  const readBack = async (where = "") => {
    const c = await db.admin.connect();
    try {
      const r = await c.query(
        `SELECT (extract(epoch FROM time) * 1000)::bigint AS ms, equipment_id, facility_id, temperature, vibration, pressure
         FROM sensor_data_raw WHERE tenant_id = $1 ${where} ORDER BY time, equipment_id`,
        [tenant],
      );
      return r.rows;
    } finally {
      c.release();
    }
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    await insertTenant(db.admin, { tenantId: tenant, retentionDays: null });
    writer = new TimescaleWriter(db.writer);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("stores a batch and reads it back exactly, creating missing partitions on the way", async () => {
    const p = partition++;
    const base = Date.UTC(2021, 5, 30, 23, 59, 0); // spans two UTC days, neither with a partition yet
    const rs = rows(200, base);
    const res = await writer.writeBatch(batch(rs, p, 0));
    expect(res).toMatchObject({ inserted: 200, duplicates: 0, rejected: [] });
    const back = await readBack(`AND time >= '2021-06-30' AND time < '2021-07-02'`);
    expect(back).toHaveLength(200);
    const byKey = new Map(rs.map((r) => [`${r.time}|${r.equipmentId}`, r]));
    for (const b of back) {
      const r = byKey.get(`${b.ms}|${b.equipment_id}`)!;
      expect(r).toBeDefined();
      expect(b.facility_id).toBe(r.facilityId);
      for (const m of ["temperature", "vibration", "pressure"] as const) {
        if (r[m] === null) expect(b[m]).toBeNull();
        else expect(Math.fround(b[m])).toBe(Math.fround(r[m]!));
      }
    }
    const stored = await writer.storedOffsets(GROUP, TOPIC);
    expect(stored.get(p)).toBe(200);
  });

  it("round-trips awkward text byte for byte (class 9)", async () => {
    const p = partition++;
    const values = ["pump\\200", "C:\\new\\tank", "A\tB\nC", "\\N", "", "crlf\r\nend", "ünïcödé-€-𝄞"];
    const base = Date.UTC(2022, 0, 1);
    const rs: StoredReading[] = values.map((v, i) => ({
      offset: i,
      time: base,
      tenantId: tenant,
      equipmentId: v,
      facilityId: v,
      temperature: i === 0 ? null : i,
      vibration: null,
      pressure: null,
      flow_rate: null,
    }));
    await writer.writeBatch(batch(rs, p, 0));
    const back = await readBack(`AND time = '2022-01-01T00:00:00Z'`);
    expect(back.map((b) => b.equipment_id).sort()).toEqual([...values].sort());
    for (const b of back) expect(b.facility_id).toBe(b.equipment_id);
    // Only a real null is NULL: the literal two characters \N and the empty string are values.
    const nulls = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1 AND time = '2022-01-01T00:00:00Z' AND temperature IS NULL", [tenant]);
    expect(nulls.rows[0].n).toBe(1);
  });

  it("a replay with 200 already stored and two in-batch duplicates inserts 800, then 0 (class 10)", async () => {
    const p = partition++;
    const base = Date.UTC(2022, 1, 1);
    const all = rows(1000, base).map((r, i) => ({ ...r, equipmentId: `dup-${i}` }));
    await writer.writeBatch(batch(all.slice(0, 200), p, 0));
    // The replayed batch: all 1000 again (first 200 stored), plus a second copy of row 500 with
    // other values at a later offset — the earlier offset wins, deterministically.
    const dupe = { ...all[500]!, offset: 1000, temperature: -1 };
    const replay = [...all, dupe];
    const res = await writer.writeBatch(batch(replay, p, 200, { expectedOffset: 200, nextOffset: 1001 }));
    expect(res.inserted).toBe(800);
    expect(res.duplicates).toBe(201);
    const row500 = await db.admin.query("SELECT temperature FROM sensor_data_raw WHERE tenant_id = $1 AND equipment_id = 'dup-500'", [tenant]);
    expect(row500.rows).toHaveLength(1);
    expect(Math.fround(row500.rows[0].temperature)).toBe(Math.fround(all[500]!.temperature!));
    // The same batch once more under a new fence position: nothing inserted, no error.
    const again = await writer.writeBatch(batch(replay, p, 1001, { expectedOffset: 1001, nextOffset: 1002 }));
    expect(again.inserted).toBe(0);
    const count = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1 AND equipment_id LIKE 'dup-%'", [tenant]);
    expect(count.rows[0].n).toBe(1000);
  });

  it("COPYs a batch as the loader; a duplicate key redoes it in insert mode, and the partition's next batches skip COPY for a while", async () => {
    // A writer of its own whose connections record what they are sent.
    const sent: string[] = [];
    const pool = createPool({ connectionString: db.adminUrl, role: "millrace_writer", max: 1, applicationName: "sink-test-spy" });
    pool.on("connect", (c: pg.PoolClient) => {
      const query = c.query.bind(c) as (...a: unknown[]) => unknown;
      (c as { query: unknown }).query = (q: unknown, ...rest: unknown[]) => {
        sent.push(typeof q === "string" ? q : String((q as { text?: string }).text));
        return query(q, ...rest);
      };
    });
    const w = new TimescaleWriter(pool);
    const copies = () => sent.filter((t) => t.startsWith("COPY sensor_data_raw ")).length;
    const inserts = () => sent.filter((t) => /^WITH moved AS \(INSERT INTO sensor_data_raw/.test(t)).length;
    try {
      const p = partition++;
      const base = Date.UTC(2022, 6, 1);
      const rs = rows(40, base).map((r) => ({ ...r, equipmentId: `mode-${r.offset}` }));
      const first = await w.writeBatch(batch(rs.slice(0, 10), p, 0));
      expect(first).toMatchObject({ inserted: 10, duplicates: 0 });
      expect(sent).toContain("SET LOCAL ROLE millrace_loader");
      expect([copies(), inserts()]).toEqual([1, 0]);

      // Offsets 10–19 carry a re-sent copy of offset 3's reading: the COPY fails on the key, the
      // batch is written again with ON CONFLICT DO NOTHING, the stored reading is offset 3's.
      const resent = { ...rs[3]!, offset: 10, temperature: -40 };
      const withDupe = [resent, ...rs.slice(11, 20)];
      const second = await w.writeBatch(batch(withDupe, p, 10, { nextOffset: 20 }));
      expect(second).toMatchObject({ inserted: 9, duplicates: 1, rejected: [] });
      expect([copies(), inserts()]).toEqual([2, 1]);
      const t3 = await db.admin.query("SELECT temperature FROM sensor_data_raw WHERE tenant_id = $1 AND equipment_id = 'mode-3'", [tenant]);
      expect(t3.rows).toHaveLength(1);
      expect(Math.fround(t3.rows[0].temperature)).toBe(Math.fround(rs[3]!.temperature!));

      // The partition's next batches go straight to insert mode, then back to COPY.
      let next = 20;
      for (let i = 0; i < INSERT_MODE_BATCHES; i++) {
        const r = rows(1, base + 3_600_000 + i * 1000, next).map((x) => ({ ...x, equipmentId: `mode-late-${next}` }));
        await w.writeBatch(batch(r, p, next));
        next++;
      }
      expect([copies(), inserts()]).toEqual([2, 1 + INSERT_MODE_BATCHES]);
      await w.writeBatch(batch(rows(1, base + 7_200_000, next).map((x) => ({ ...x, equipmentId: "mode-copy-again" })), p, next));
      expect([copies(), inserts()]).toEqual([3, 1 + INSERT_MODE_BATCHES]);
      const n = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1 AND equipment_id LIKE 'mode-%'", [tenant]);
      expect(n.rows[0].n).toBe(10 + 9 + INSERT_MODE_BATCHES + 1);
      expect((await w.storedOffsets(GROUP, TOPIC)).get(p)).toBe(next + 1);
    } finally {
      await pool.end();
    }
  });

  it("a row that cannot be stored in the middle of 1,000 is isolated; the other 999 commit (class 8)", async () => {
    const p = partition++;
    const base = Date.UTC(2022, 2, 1);
    const rs = rows(1000, base).map((r, i) => ({ ...r, equipmentId: i === 500 ? "bad\u0000nul" : `mid-${i}` }));
    const res = await writer.writeBatch(batch(rs, p, 0));
    expect(res.inserted).toBe(999);
    expect(res.rejected.map((r) => r.offset)).toEqual([500]);
    expect(res.rejected[0]!.reason).toBe("sink_data_error");
    const dls = await db.admin.query("SELECT source_offset, reason, message FROM millrace.dead_letters WHERE source_topic = $1 AND reason = 'sink_data_error'", [TOPIC]);
    expect(dls.rows).toHaveLength(1);
    expect(Number(dls.rows[0].source_offset)).toBe(500);
    expect(dls.rows[0].message).toMatch(/22021/);
    expect((await writer.storedOffsets(GROUP, TOPIC)).get(p)).toBe(1000);
    // The pool still works after the failed COPY.
    const ok = await db.writer.query("SELECT 1 AS one");
    expect(ok.rows[0].one).toBe(1);
  });

  // The sink alone, in this process; the whole path (a worker process under TZ=Europe/Berlin, Kafka
  // → PostgreSQL and Parquet) is test/integration/worker-timezone.test.ts.
  it("stores the same instant whatever the process TZ (class 11)", async () => {
    const p = partition++;
    const instant = Date.parse("2024-03-31T01:30:00Z"); // the Berlin DST night
    const old = process.env.TZ;
    try {
      process.env.TZ = "Europe/Berlin";
      await writer.writeBatch(batch([{ ...rows(1, instant)[0]!, equipmentId: "tz-berlin" }], p, 0));
      process.env.TZ = "UTC";
      await writer.writeBatch(batch([{ ...rows(1, instant, 1)[0]!, equipmentId: "tz-utc" }], p, 1));
    } finally {
      if (old === undefined) delete process.env.TZ;
      else process.env.TZ = old;
    }
    const back = await db.admin.query(
      "SELECT equipment_id, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') AS utc FROM sensor_data_raw WHERE tenant_id = $1 AND equipment_id LIKE 'tz-%' ORDER BY 1",
      [tenant],
    );
    expect(back.rows).toEqual([
      { equipment_id: "tz-berlin", utc: "2024-03-31T01:30:00" },
      { equipment_id: "tz-utc", utc: "2024-03-31T01:30:00" },
    ]);
  });

  it("a batch that fails before COMMIT leaves nothing; the stored offset stays at the committed prefix and the retry stores each row once (class 2)", async () => {
    const p = partition++;
    const base = Date.UTC(2022, 4, 1);
    const rs = rows(20, base).map((r) => ({ ...r, equipmentId: `prefix-${r.offset}` }));
    await writer.writeBatch(batch(rs.slice(0, 10), p, 0));
    // Offsets 10–19: the batch's statement has run, then the connection "drops" before COMMIT (a crash there).
    const lost = Object.assign(new Error("connection lost"), { code: "08006" });
    await expect(
      writer.writeBatch(batch(rs.slice(10), p, 10, { inTransaction: async () => Promise.reject(lost) })),
    ).rejects.toBe(lost);
    const mid = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1 AND equipment_id LIKE 'prefix-%'", [tenant]);
    expect(mid.rows[0].n).toBe(10);
    expect((await writer.storedOffsets(GROUP, TOPIC)).get(p)).toBe(10);
    // Redelivered from 10, once.
    const res = await writer.writeBatch(batch(rs.slice(10), p, 10));
    expect(res.inserted).toBe(10);
    expect((await writer.storedOffsets(GROUP, TOPIC)).get(p)).toBe(20);
    const all = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1 AND equipment_id LIKE 'prefix-%'", [tenant]);
    expect(all.rows[0].n).toBe(20);
  });

  it("fences a stale batch: a worker whose start offset was overtaken neither writes nor commits (class 1)", async () => {
    const p = partition++;
    const base = Date.UTC(2022, 3, 1);
    const rs = rows(10, base).map((r) => ({ ...r, equipmentId: `fence-${r.offset}` }));
    // Worker B (new owner) stores 0..9 first; worker A's older batch of 0..9 must be refused.
    await writer.writeBatch(batch(rs, p, 0));
    const stale = rs.map((r) => ({ ...r, temperature: 999 }));
    await expect(writer.writeBatch(batch(stale, p, 0, { nextOffset: 5 }))).rejects.toBeInstanceOf(FencedError);
    const temps = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1 AND equipment_id LIKE 'fence-%' AND temperature = 999", [tenant]);
    expect(temps.rows[0].n).toBe(0);
    expect((await writer.storedOffsets(GROUP, TOPIC)).get(p)).toBe(10);
    // A retry of the very batch that already committed (its COMMIT reply was lost) is recognised.
    const retried = await writer.writeBatch(batch(rs, p, 0));
    expect(retried.alreadyCommitted).toBe(true);
  });
});
