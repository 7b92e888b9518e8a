/**
 * A/B of the sink alone: TimescaleWriter.writeBatch of two source trees (writer.ts modules), the
 * same fixture rows in 5000-row batches over one connection, turn about, each into a fresh
 * database; reports wall time and the database backend's CPU per million rows.
 *
 *   node --import tsx bench/writer-ab.ts --writers /tmp/base/sinks/timescale/writer.ts,sinks/timescale/writer.ts --records 200000 --rounds 3
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { createPool } from "../sinks/timescale/pool.ts";
import { createBenchDatabase, ensurePartitions, insertTenants } from "./db.ts";
import { fixtureRows, fixtureSpanMs, makeFixture } from "./fixtures.ts";
import { pidsCpuSeconds, pidsSnapshot } from "./procstat.ts";

const { values } = parseArgs({ options: { writers: { type: "string" }, records: { type: "string", default: "200000" }, rounds: { type: "string", default: "3" }, batch: { type: "string", default: "5000" } } });
const paths = values.writers!.split(",").map((p) => resolve(p));
const fx = makeFixture({ count: Number(values.records), tenants: 4, seed: "millrace-bench" });
const byTenant = await fixtureRows(fx);
const batch = Number(values.batch);
const out: Record<string, number[]> = {};
for (let round = 0; round < Number(values.rounds); round++) {
  for (const p of paths) {
    const mod = (await import(pathToFileURL(p).href)) as typeof import("../sinks/timescale/writer.ts");
    const db = await createBenchDatabase("wab");
    try {
      await insertTenants(db.admin, fx.tenants);
      await ensurePartitions(db.admin, fx.start, fx.start + fixtureSpanMs(fx));
      const pool = createPool({ connectionString: db.adminUrl, role: "millrace_writer", max: 1 });
      const writer = new mod.TimescaleWriter(pool);
      await pool.query("SELECT 1");
      const pids = (await db.admin.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'millrace'", [db.name])).rows.map((r) => r.pid);
      const s0 = pidsSnapshot(pids);
      const t0 = performance.now();
      let n = 0;
      let partition = 0;
      for (const [tenantId, rows] of byTenant) {
        let next = 0;
        for (let i = 0; i < rows.length; i += batch) {
          const chunk = rows.slice(i, i + batch).map((r, j) => ({ ...r, offset: next + j }));
          await writer.writeBatch({ consumerGroup: "wab", topic: `t-${tenantId}`, partition, tenantId, expectedOffset: next, nextOffset: next + chunk.length, rows: chunk, deadLetters: [], deadLetterFor: () => { throw new Error("no"); } });
          next += chunk.length;
          n += chunk.length;
        }
        partition++;
      }
      const secs = (performance.now() - t0) / 1000;
      const cpu = pidsCpuSeconds(s0, pidsSnapshot(pids));
      await pool.end();
      (out[p] ??= []).push(n / secs);
      console.log(JSON.stringify({ writer: p, round, rows: n, seconds: +secs.toFixed(2), rps: Math.round(n / secs), pgCpuPerM: +((cpu * 1e6) / n).toFixed(2) }));
    } finally {
      await db.drop();
    }
  }
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const p of paths) console.log(JSON.stringify({ summary: p, medianRps: Math.round(med(out[p]!)), ratioToFirst: +(med(out[p]!) / med(out[paths[0]!]!)).toFixed(2) }));
