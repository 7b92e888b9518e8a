/**
 * SKAB valve1 (../shared/datasets/skab/valve1, read in place, never copied): the labelled anomaly
 * windows of each experiment and the score of a set of raised alerts against them. Shared by the
 * pure-evaluator test (test/unit/skab-thresholds.test.ts) and the end-to-end replay through a real
 * worker (test/integration/skab-replay.test.ts), so both count the same way:
 *
 *   an alert is a true positive when it is *raised* inside a window (anomaly = 1, first to last row
 *   of a contiguous run); precision = raised inside a window / all raised; recall = windows with at
 *   least one alert raised inside / all windows.
 *
 * The labels are read here by an independent parse of the file (not by the CSV reader under test).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { SKAB_VALVE_FLOW_RULE } from "../../produce/csv.ts";
import { repoRoot } from "../../stack/context.ts";

export const VALVE1 = join(repoRoot, "..", "shared", "datasets", "skab", "valve1");

/** The chosen rule (docs/alerts.md §7, README), as `millrace rules set` stores it. */
export const VALVE_FLOW_LOW = SKAB_VALVE_FLOW_RULE;

/** The 16 experiment files, in numeric order (0.csv … 15.csv). */
export function valve1Files(): string[] {
  return readdirSync(VALVE1)
    .filter((f) => f.endsWith(".csv"))
    .sort((a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10));
}

export interface LabelledRow {
  /** Epoch ms; SKAB's zone-less `datetime` taken as UTC (as `millrace produce csv` does). */
  time: number;
  anomaly: boolean;
}

/** Time and label of every row of one experiment. */
export function readLabels(file: string): LabelledRow[] {
  const [header, ...lines] = readFileSync(file, "utf8").trim().split(/\r?\n/);
  const cols = header!.split(";");
  const at = cols.indexOf("datetime");
  const an = cols.indexOf("anomaly");
  if (at < 0 || an < 0) throw new Error(`${file}: no datetime / anomaly column`);
  return lines.map((l) => {
    const f = l.split(";");
    return { time: Date.parse(`${f[at]!.replace(" ", "T")}Z`), anomaly: Number(f[an]) === 1 };
  });
}

/** Contiguous runs of anomaly = 1, as [first time, last time]. */
export function anomalyWindows(rows: readonly LabelledRow[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let start: number | undefined;
  rows.forEach((r, i) => {
    if (r.anomaly && start === undefined) start = r.time;
    if (start !== undefined && (!r.anomaly || i === rows.length - 1)) {
      out.push([start, r.anomaly ? r.time : rows[i - 1]!.time]);
      start = undefined;
    }
  });
  return out;
}

export interface RaisedAlert {
  equipmentId: string;
  ruleId: string;
  /** Event time of the raising reading. */
  time: number;
}

export interface SkabScore {
  raised: number;
  inside: number;
  windows: number;
  windowsHit: number;
  precision: number;
  recall: number;
  /** Per rule id: alerts raised, raised inside a window, windows with one of its alerts raised inside. */
  byRule: Record<string, { raised: number; inside: number; windowsHit: number }>;
}

/** Score raised alerts against the windows of each equipment (every equipment's windows count, alerts or not). */
export function scoreRaised(raised: readonly RaisedAlert[], windowsOf: ReadonlyMap<string, ReadonlyArray<[number, number]>>, ruleIds: readonly string[]): SkabScore {
  const byRule: SkabScore["byRule"] = Object.fromEntries(ruleIds.map((id) => [id, { raised: 0, inside: 0, windowsHit: 0 }]));
  const hit = new Set<string>();
  const ruleHit = new Set<string>();
  let inside = 0;
  for (const a of raised) {
    const ws = windowsOf.get(a.equipmentId);
    if (ws === undefined) throw new Error(`alert on ${a.equipmentId}, which is not one of the scored experiments`);
    const mine = (byRule[a.ruleId] ??= { raised: 0, inside: 0, windowsHit: 0 });
    mine.raised++;
    const w = ws.findIndex(([from, to]) => a.time >= from && a.time <= to);
    if (w < 0) continue;
    inside++;
    mine.inside++;
    hit.add(`${a.equipmentId}#${w}`);
    if (!ruleHit.has(`${a.ruleId}/${a.equipmentId}#${w}`)) {
      ruleHit.add(`${a.ruleId}/${a.equipmentId}#${w}`);
      mine.windowsHit++;
    }
  }
  const windows = [...windowsOf.values()].reduce((n, ws) => n + ws.length, 0);
  return {
    raised: raised.length,
    inside,
    windows,
    windowsHit: hit.size,
    precision: raised.length === 0 ? 0 : inside / raised.length,
    recall: windows === 0 ? 0 : hit.size / windows,
    byRule,
  };
}
