/**
 * The benchmark's smoke profile end to end on the local stack (tiny N, about a minute): proves that
 * every section runs and writes its results — never a timing assertion.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { PROFILES, runBench, type BenchResults } from "../../bench/run.ts";

const out = mkdtempSync(join(tmpdir(), "millrace-bench-smoke-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

const positive = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v > 0;

describe("millrace bench --profile smoke", () => {
  it("writes JSON with every section, sane values, a Markdown table and a chart", async () => {
    const { files } = await runBench({ ...PROFILES.smoke, outDir: out, keep: false }, () => {});
    expect(existsSync(files.json)).toBe(true);
    const r = JSON.parse(readFileSync(files.json, "utf8")) as BenchResults;

    expect(r.meta.profile).toBe("smoke");
    expect(r.meta.machine.cores).toBeGreaterThan(0);

    // Hot path: every stage measured, no slot left pending.
    expect(r.micro.stages.map((s) => s.id)).toEqual(
      expect.arrayContaining(["avro_decode", "avro_decode_baseline", "validate", "copy_encode_text", "copy_encode_binary", "sink_array_encode", "threshold_eval", "parquet_encode", "quota_check"]),
    );
    for (const s of r.micro.stages) {
      expect(positive(s.recordsPerSecond.median), s.id).toBe(true);
      expect(positive(s.nsPerRecord.median), s.id).toBe(true);
    }
    expect(positive(r.micro.stages.find((s) => s.id === "avro_decode")!.ratioToBaseline)).toBe(true);
    expect(r.micro.pending).toEqual([]);

    // End to end.
    expect(r.e2e.preload).toMatchObject({ records: PROFILES.smoke.records });
    const d = r.e2e.drain;
    if ("error" in d) throw new Error(`e2e drain failed: ${d.error}`);
    expect(d.records).toBe(PROFILES.smoke.records);
    expect(positive(d.recordsPerSecond)).toBe(true);
    expect(positive(d.cpu.worker)).toBe(true);
    expect(positive(d.peakRssBytes)).toBe(true);
    // No drain measures the tier rate limit instead of the pipeline (the bench's tenants are enterprise).
    expect(d.rateLimitedSeconds).toBe(0);
    expect(r.e2e.latency).toHaveLength(PROFILES.smoke.latencyFractions.length);
    for (const p of r.e2e.latency) {
      if ("error" in p) throw new Error(`latency phase failed: ${p.error}`);
      expect(p.latencyMs.count).toBeGreaterThan(0);
      expect(positive(p.latencyMs.p99)).toBe(true);
    }
    // Parquet: measured when the topology has the sink, with the PostgreSQL-only variant beside it.
    const pq = r.e2e.parquet;
    if ("error" in pq) throw new Error(`Parquet measurement failed: ${pq.error}`);
    if (!("skipped" in pq)) {
      // The smoke profile does not wait out idle_flush: the worker's graceful stop uploads the rest.
      expect(pq.files).toBeGreaterThan(0);
      expect(pq.coveredAfterStop).toBe(1);
      const po = r.e2e.drainPostgresOnly;
      if ("error" in po || "skipped" in po) throw new Error(`PostgreSQL-only drain: ${JSON.stringify(po)}`);
      expect(positive(po.recordsPerSecond)).toBe(true);
      expect(po.rateLimitedSeconds).toBe(0);
    }

    // Anchors: every one ran and stored the same rows as the worker.
    for (const [name, a] of Object.entries(r.anchors)) {
      if ("error" in a || "skipped" in a) throw new Error(`anchor ${name}: ${JSON.stringify(a)}`);
      expect(positive(a.recordsPerSecond), name).toBe(true);
    }
    expect(r.sameRows.length).toBeGreaterThanOrEqual(6);
    for (const s of r.sameRows) expect(s.equal, s.path).toBe(true);

    // The peer is skipped in smoke, and says so.
    expect(r.peer).toEqual({ skipped: "smoke profile" });

    // Ratios: finite, except those involving the skipped peer.
    for (const q of r.ratios) {
      if (q.name.includes("peer")) expect(q.value).toBeNull();
      else expect(positive(q.value), q.name).toBe(true);
    }
    expect(r.goals.map((g) => g.name)).toHaveLength(4);

    const md = readFileSync(files.markdown, "utf8");
    for (const h of ["## Goals", "## Throughput", "## Ratios", "## Hot path"]) expect(md).toContain(h);
    if ("png" in r.chart) expect(readFileSync(r.chart.png).subarray(1, 4).toString("latin1")).toBe("PNG");
    else expect(r.chart.skipped).toMatch(/rsvg-convert/);
  });
});
