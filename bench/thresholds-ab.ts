/**
 * A/B of the thresholds processor as the engine drives it (ThresholdEvaluator.prepare/evaluate/
 * commit per 5000-row chunk of one partition) for two source trees, on the bench fixture's rows,
 * interleaved; one core, no I/O (the alarm state source is in memory).
 *
 *   node --import tsx bench/thresholds-ab.ts --roots /tmp/base,. [--records 200000]
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { loadTopology } from "../pipelines/topology/index.ts";
import { fixtureRows, makeFixture } from "./fixtures.ts";

const { values } = parseArgs({ options: { roots: { type: "string" }, records: { type: "string", default: "200000" }, iterations: { type: "string", default: "9" } } });
const roots = values.roots!.split(",").map((r) => resolve(r));
const fx = makeFixture({ count: Number(values.records), tenants: 4, seed: "millrace-bench" });
const byTenant = await fixtureRows(fx);
const plan = loadTopology(join(roots[0]!, "topology.yaml"));
const th = plan.processors.find((x) => x.type === "thresholds");
const rules = th && th.type === "thresholds" ? th.rules : [];
const source = { loadAlarmState: async (_t: string, e: readonly string[]) => new Map(e.map((x) => [x, new Map()])), loadRuleOverrides: async () => ({ overrides: [], problems: [] }) };
const mods = await Promise.all(roots.map(async (r) => (await import(pathToFileURL(join(r, "pipelines/processors/threshold-evaluator.ts")).href)) as typeof import("../pipelines/processors/threshold-evaluator.ts")));
const n = [...byTenant.values()].reduce((a, b) => a + b.length, 0);
async function once(mod: (typeof mods)[number]): Promise<number> {
  const ev = new mod.ThresholdEvaluator({ source: source as never, defaults: rules, rulesRefreshMs: 1e12 });
  let events = 0;
  const t0 = process.hrtime.bigint();
  for (const [tenantId, rows] of byTenant) {
    for (let i = 0; i < rows.length; i += 5000) {
      const chunk = rows.slice(i, i + 5000);
      await ev.prepare(tenantId, tenantId, chunk);
      const c = ev.evaluate(tenantId, tenantId, chunk);
      ev.commit(c);
      events += c.events.length;
    }
  }
  const ns = Number(process.hrtime.bigint() - t0);
  if (events < 0) throw new Error("x");
  return ns / n;
}
const res: number[][] = roots.map(() => []);
for (let it = 0; it < Number(values.iterations) + 2; it++) {
  for (let k = 0; k < roots.length; k++) {
    const j = it % 2 ? roots.length - 1 - k : k;
    const ns = await once(mods[j]!);
    if (it >= 2) res[j]!.push(ns);
  }
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
roots.forEach((r, i) => console.log(JSON.stringify({ root: r, nsPerRecord: Math.round(med(res[i]!)), ratioToFirst: +(med(res[i]!) / med(res[0]!)).toFixed(2) })));
