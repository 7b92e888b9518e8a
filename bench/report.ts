/** The results as a Markdown table and a bar chart (SVG, rendered to PNG with rsvg-convert when present). */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import type { BenchResults } from "./run.ts";

const fmt = (v: number | null | undefined, digits = 0): string => {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  return v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
};
const x = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? "—" : `${v.toFixed(2)}×`);

type Section = { error?: string; skipped?: string } | undefined;
const why = (s: Section) => (s?.error ? `error: ${s.error.slice(0, 120)}` : s?.skipped ? `skipped: ${s.skipped}` : "—");

export function renderMarkdown(r: BenchResults): string {
  const L: string[] = [];
  const m = r.meta;
  L.push(`# millrace benchmark — ${m.profile} profile, ${m.date}`);
  L.push("");
  L.push(`Machine: ${m.machine.cores} cores (${m.machine.cpuModel}), ${fmt(m.machine.memoryGiB, 0)} GiB, Linux ${m.machine.kernel}, Node ${m.machine.node}; shared and noisy (load average at start ${m.machine.loadAverageStart.map((v) => v.toFixed(2)).join(" ")}). ` +
    `Rows: ${fmt(m.records)} synthetic readings over ${m.tenants} tenants × ${m.partitionsPerTenant} partitions. Run took ${fmt(m.elapsedSeconds, 0)} s.`);
  L.push("");
  L.push(`Code: commit ${m.git.commit.slice(0, 12)}${m.git.uncommitted.length ? ` plus uncommitted changes in the working tree (${m.git.uncommitted.slice(0, 8).join(", ")}${m.git.uncommitted.length > 8 ? ", …" : ""})` : ""}.`);
  L.push("");
  L.push("Every comparison below is a ratio of two paths measured in this run on the same rows.");
  L.push("");
  L.push("## Goals");
  L.push("");
  L.push("| goal | measured | target | met |");
  L.push("| --- | ---: | ---: | :---: |");
  for (const g of r.goals) L.push(`| ${g.name} | ${x(g.value)} | ${g.op} ${g.target}× | ${g.met === null ? "—" : g.met ? "yes" : "**no**"} |`);
  L.push("");
  L.push("## Throughput (same rows)");
  L.push("");
  L.push("| path | records | records/s | CPU-s per M records | notes |");
  L.push("| --- | ---: | ---: | ---: | --- |");
  for (const row of r.table) L.push(`| ${row.path} | ${fmt(row.records)} | ${row.recordsPerSecond === null ? why(row.section) : fmt(row.recordsPerSecond)} | ${row.cpu ?? "—"} | ${row.notes ?? ""} |`);
  L.push("");
  L.push("## Ratios");
  L.push("");
  L.push("| ratio | value | what it says |");
  L.push("| --- | ---: | --- |");
  for (const q of r.ratios) L.push(`| ${q.name} | ${x(q.value)} | ${q.meaning} |`);
  L.push("");
  const d = r.e2e.drain;
  if (d && !("error" in d)) {
    L.push("## End to end: the worker");
    L.push("");
    L.push(`Drain of ${fmt(d.records)} records: ${fmt(d.recordsPerSecond)} records/s from joining the group to the last commit (${fmt(d.seconds, 1)} s; steady, first → last commit: ${fmt(d.steadyRecordsPerSecond)} records/s); worker start-up to join ${fmt(d.startupMs)} ms.`);
    L.push("");
    L.push(`CPU-seconds per million records — worker ${fmt(d.cpu.perMillionRecords.worker, 1)}, PostgreSQL ${fmt(d.cpu.perMillionRecords.postgresCluster, 1)} (cluster; this run's database's backends ${fmt(d.cpu.perMillionRecords.postgresOwnDatabase, 1)}), Kafka ${fmt(d.cpu.perMillionRecords.kafka, 1)}; ` +
      `the rest of the machine was busy ${fmt(r.e2e.backgroundCores, 2)} cores on average meanwhile. Peak RSS of the worker ${fmt((d.peakRssBytes ?? 0) / 2 ** 20)} MiB (RSS first/last sample ${fmt((d.rssSamples[0]?.bytes ?? 0) / 2 ** 20)}/${fmt((d.rssSamples[d.rssSamples.length - 1]?.bytes ?? 0) / 2 ** 20)} MiB over ${fmt(d.seconds, 0)} s).`);
    L.push("");
    if (d.rssSamples.length > 1) {
      // At most ~12 points of the once-a-second samples: the trend, not the noise.
      const step = Math.max(1, Math.ceil(d.rssSamples.length / 12));
      const pts = d.rssSamples.filter((_, i) => i % step === 0 || i === d.rssSamples.length - 1);
      L.push(`Worker RSS over the drain (s → MiB): ${pts.map((x) => `${fmt(x.t, 0)} → ${fmt(x.bytes / 2 ** 20)}`).join(", ")}. For RSS over several minutes under steady load: \`bench/soak.ts\` (docs/benchmarks.md).`);
      L.push("");
    }
  }
  if (r.e2e.latency.length) {
    L.push("| produce-to-commit latency | target rate | achieved | records | p50 ms | p90 ms | p99 ms | max ms |");
    L.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const p of r.e2e.latency) {
      if ("error" in p) L.push(`| ${p.fraction * 100}% | — | — | — | ${p.error} | | | |`);
      else L.push(`| at ${p.fraction * 100}% of the measured rate | ${fmt(p.targetRate)}/s | ${fmt(p.producedPerSecond)}/s | ${fmt(p.latencyMs.count)} | ${fmt(p.latencyMs.p50)} | ${fmt(p.latencyMs.p90)} | ${fmt(p.latencyMs.p99)} | ${fmt(p.latencyMs.max)} |`);
    }
    L.push("");
    L.push(`Latency = commit time (first poll of millrace.consumer_offsets every ${r.e2e.latency.map((p) => ("pollMs" in p ? p.pollMs : undefined)).find((v) => v !== undefined) ?? "?"} ms that covers the offset) − the record's Kafka timestamp; every record of the phase.`);
    L.push("");
  }
  const pq = r.e2e.parquet;
  if ("sink" in pq) {
    L.push(
      `Parquet (sink \`${pq.sink}\`, into the run's own bucket): ${fmt(pq.coveredAtPgDone * 100, 1)}% of the records were uploaded when PostgreSQL had them all; ` +
        `every record was in Parquet ${pq.seconds === null ? `— not within the ${fmt(pq.waitedMs / 1000)} s waited` : `${fmt(pq.seconds, 1)} s after the join (${fmt(pq.recordsPerSecondBothWritten)} records/s with both written)`}; ` +
        `after the worker's graceful stop ${fmt((pq.coveredAfterStop ?? 0) * 100, 1)}%; ` +
        `${fmt(pq.files)} files, ${fmt(pq.bytes / 2 ** 20, 1)} MiB (${fmt(pq.bytesPerRecord, 1)} bytes/record). Files close at max_rows, max_span or idle_flush (${fmt(pq.idleFlushMs / 1000)} s), so the tail is mostly that wait.`,
    );
  } else L.push(`Parquet: ${why(pq as Section)}.`);
  const po = r.e2e.drainPostgresOnly;
  if ("recordsPerSecond" in po) L.push("", `PostgreSQL only (Parquet sink removed from the topology): ${fmt(po.recordsPerSecond)} records/s, worker ${fmt(po.cpu.perMillionRecords.worker, 1)} CPU-s per M records, peak RSS ${fmt((po.peakRssBytes ?? 0) / 2 ** 20)} MiB.`);
  L.push("");
  L.push("## Hot path (one core, fixed fixtures)");
  L.push("");
  L.push(`${fmt(r.micro.records)} records, ${r.micro.warmup} warm-up + ${r.micro.iterations} measured iterations; median (min–max).`);
  L.push("");
  L.push("| stage | ns/record | records/s | vs baseline | what |");
  L.push("| --- | ---: | ---: | ---: | --- |");
  for (const s of r.micro.stages) {
    L.push(`| ${s.id} | ${fmt(s.nsPerRecord.median)} (${fmt(s.nsPerRecord.min)}–${fmt(s.nsPerRecord.max)}) | ${fmt(s.recordsPerSecond.median)} | ${s.ratioToBaseline === undefined ? "" : `${x(s.ratioToBaseline)} ${s.baseline}`} | ${s.describe} |`);
  }
  for (const p of r.micro.pending) L.push(`| ${p.id} | pending | | | ${p.describe} — ${p.pending} |`);
  L.push("");
  if (r.sameRows.length) {
    L.push("Same rows check (count and checksum of what each path stored vs the worker): " + r.sameRows.map((s) => `${s.path} ${s.equal ? "equal" : `**differs** (${s.rows} rows)`}`).join(", ") + ".");
    L.push("");
  }
  const pr = r.profile;
  if (pr && "summary" in pr) {
    L.push("## Where the worker's CPU goes (node --cpu-prof, separate profiled drain of the same rows)");
    L.push("");
    L.push(`Profiled drain: ${fmt(pr.drain?.recordsPerSecond)} records/s (profiler on). Main thread busy ${fmt(pr.summary.seconds, 1)} s, idle ${fmt(pr.summary.idleSeconds, 1)} s; samples from the join to the last commit only; shares are of the busy time.`);
    L.push("");
    L.push("| module group | self s | share |");
    L.push("| --- | ---: | ---: |");
    for (const g of pr.summary.groups) L.push(`| ${g.group} | ${fmt(g.seconds, 2)} | ${fmt(g.share * 100, 1)}% |`);
    L.push("");
    L.push("| top self-time functions | module | where | self s | share |");
    L.push("| --- | --- | --- | ---: | ---: |");
    for (const f of pr.summary.topSelf.slice(0, 20)) L.push(`| ${f.fn} | ${f.group} | ${f.where} | ${fmt(f.seconds, 2)} | ${fmt(f.share * 100, 1)}% |`);
    L.push("");
    L.push("| our functions, inclusive | where | s | share |");
    L.push("| --- | --- | ---: | ---: |");
    for (const f of pr.summary.oursInclusive.slice(0, 12)) L.push(`| ${f.fn} | ${f.where} | ${fmt(f.seconds, 2)} | ${fmt(f.share * 100, 1)}% |`);
    L.push("");
  } else {
    L.push(`CPU profile: ${why(pr as Section)}.`);
    L.push("");
  }
  if (r.notes.length) {
    L.push("## Notes");
    L.push("");
    for (const n of r.notes) L.push(`- ${n}`);
    L.push("");
  }
  return L.join("\n");
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Horizontal bars of records/s (log scale), ours in blue, anchors grey, peer/naive orange. */
export function renderSvg(r: BenchResults): string {
  const bars = r.table.filter((t) => t.recordsPerSecond !== null && t.recordsPerSecond > 0) as Array<(typeof r.table)[number] & { recordsPerSecond: number }>;
  const W = 900;
  const left = 300;
  const right = 110;
  const rowH = 30;
  const top = 60;
  const H = top + bars.length * rowH + 50;
  const max = Math.max(...bars.map((b) => b.recordsPerSecond), 10);
  const min = Math.min(...bars.map((b) => b.recordsPerSecond), max / 10);
  const lo = Math.floor(Math.log10(min));
  const hi = Math.ceil(Math.log10(max));
  const scale = (v: number) => ((Math.log10(v) - lo) / Math.max(1, hi - lo)) * (W - left - right);
  const color = (kind: string) => (kind === "ours" ? "#2b6cb0" : kind === "peer" ? "#dd6b20" : "#8a8f98");
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, sans-serif">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="26" font-size="16" text-anchor="middle" font-weight="bold">${esc(`millrace ${r.meta.profile} benchmark ${r.meta.date}: records/s on the same ${r.meta.records.toLocaleString("en-US")} rows (log scale)`)}</text>`);
  out.push(`<text x="${W / 2}" y="44" font-size="11" text-anchor="middle" fill="#555">${esc(`${r.meta.machine.cores} cores, shared; blue = millrace, grey = anchors/ceilings, orange = peer and naive`)}</text>`);
  for (let e = lo; e <= hi; e++) {
    const gx = left + scale(10 ** e);
    out.push(`<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${top + bars.length * rowH}" stroke="#e2e2e2"/>`);
    out.push(`<text x="${gx}" y="${top + bars.length * rowH + 16}" font-size="11" text-anchor="middle" fill="#555">${esc((10 ** e).toLocaleString("en-US"))}</text>`);
  }
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    const w = Math.max(2, scale(b.recordsPerSecond));
    out.push(`<text x="${left - 8}" y="${y + 19}" font-size="12" text-anchor="end">${esc(b.path)}</text>`);
    out.push(`<rect x="${left}" y="${y + 5}" width="${w}" height="${rowH - 10}" fill="${color(b.kind)}"/>`);
    out.push(`<text x="${left + w + 6}" y="${y + 19}" font-size="12">${esc(Math.round(b.recordsPerSecond).toLocaleString("en-US"))}</text>`);
  });
  out.push(`</svg>`);
  return out.join("\n");
}

/** Write the SVG and render it to PNG; returns how (or why not). */
export function writeChart(r: BenchResults, svgFile: string, pngFile: string): { png: string } | { skipped: string } {
  writeFileSync(svgFile, renderSvg(r));
  const res = spawnSync("rsvg-convert", ["-f", "png", "-o", pngFile, svgFile], { encoding: "utf8", timeout: 60_000 });
  if (res.error || res.status !== 0) return { skipped: `rsvg-convert unavailable or failed (apt-get install librsvg2-bin): ${res.error?.message ?? res.stderr}` };
  return { png: pngFile };
}
