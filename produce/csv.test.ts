import { existsSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../stack/context.ts";
import {
  CsvHeaderError,
  CsvRowError,
  equipmentIdFromPath,
  parseCsvTime,
  parseMapping,
  readCsvReadings,
  SKAB_MAPPING,
  type CsvRecord,
  type CsvReplayOptions,
} from "./csv.ts";

const TENANT = "3f2b8c1e-6d4a-4b7e-9c0d-1a2b3c4d5e6f";
const BASE: CsvReplayOptions = { tenantId: TENANT, equipmentId: "valve1-00", facilityId: "skab" };

const SKAB_HEADER = "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;Thermocouple;Voltage;Volume Flow RateRMS;anomaly;changepoint";
/** Four SKAB rows (the third with a dropout in Temperature). */
const SKAB_FIXTURE = [
  SKAB_HEADER,
  "2020-03-09 10:14:33;0.0265878;0.0401113;1.3302;0.054711;79.3366;26.0199;233.062;32.0;0.0;0.0",
  "2020-03-09 10:14:34;0.0261697;0.0404525;1.35399;0.382638;79.5158;26.0258;236.04;32.0;0.0;0.0",
  "2020-03-09 10:14:35;0.0267164;0.0400582;1.45269;-0.273216;;26.0202;228.941;32.0;0.0;0.0",
  "2020-03-09 10:14:36;0.0265747;0.0400734;1.08128;0.054711;79.7815;26.0244;231.548;32.0;0.0;0.0",
  "",
].join("\n");

const SKAB_VALVE1_0 = join(repoRoot, "..", "shared", "datasets", "skab", "valve1", "0.csv");

async function collect(source: string | Readable, opts: Partial<CsvReplayOptions> = {}): Promise<CsvRecord[]> {
  const out: CsvRecord[] = [];
  for await (const r of readCsvReadings(source, { ...BASE, ...opts })) out.push(r);
  return out;
}

async function failure(p: Promise<unknown>): Promise<Error> {
  return await p.then(
    () => {
      throw new Error("expected a failure");
    },
    (e: unknown) => e as Error,
  );
}

describe("CSV replay", () => {
  it("reads SKAB rows with the default mapping, zone-less times as UTC, empty cells as null", async () => {
    const recs = await collect(Readable.from([SKAB_FIXTURE]), { name: "fixture.csv" });
    expect(recs).toHaveLength(4);
    expect(recs[0]).toEqual({
      tenantId: TENANT,
      seq: 0,
      line: 2,
      reading: {
        time: Date.parse("2020-03-09T10:14:33Z"),
        tenant_id: TENANT,
        equipment_id: "valve1-00",
        facility_id: "skab",
        temperature: 79.3366,
        vibration: 0.0265878,
        pressure: 0.054711,
        flow_rate: 32,
      },
    });
    expect(recs.map((r) => r.seq)).toEqual([0, 1, 2, 3]);
    expect(recs.map((r) => new Date(r.reading.time).toISOString())).toEqual([
      "2020-03-09T10:14:33.000Z",
      "2020-03-09T10:14:34.000Z",
      "2020-03-09T10:14:35.000Z",
      "2020-03-09T10:14:36.000Z",
    ]);
    expect(recs[2]!.reading.temperature).toBeNull();
    expect(recs[2]!.reading.pressure).toBe(-0.273216);
  });

  it("replays the real SKAB valve1/0.csv: 1147 readings, streamed", async () => {
    expect(existsSync(SKAB_VALVE1_0), `${SKAB_VALVE1_0} (the shared SKAB dataset)`).toBe(true);
    const recs = await collect(SKAB_VALVE1_0);
    expect(recs).toHaveLength(1147);
    const first = recs[0]!;
    expect(new Date(first.reading.time).toISOString()).toBe("2020-03-09T10:14:33.000Z");
    expect(first.reading.temperature).toBe(79.3366);
    expect(first.reading.vibration).toBe(0.0265878);
    expect(first.reading.pressure).toBe(0.054711);
    expect(first.line).toBe(2);
    expect(recs.at(-1)!.seq).toBe(1146);
    expect(recs.at(-1)!.line).toBe(1148);
    for (let i = 1; i < recs.length; i++) expect(recs[i]!.reading.time).toBeGreaterThan(recs[i - 1]!.reading.time);
    expect(recs.every((r) => r.reading.temperature !== null && r.reading.vibration !== null && r.reading.pressure !== null)).toBe(true);
  });

  it("fails on a bad row with the file and line number, by default", async () => {
    const bad = SKAB_FIXTURE.replace("79.5158", "79,5x");
    const err = await failure(collect(Readable.from([bad]), { name: "bad.csv" }));
    expect(err).toBeInstanceOf(CsvRowError);
    expect((err as CsvRowError).line).toBe(3);
    expect(err.message).toBe('bad.csv:3: temperature column: "79,5x" is not a number (expected a decimal number, e.g. 79.3366 or -1.5e-3)');

    const badTime = SKAB_FIXTURE.replace("2020-03-09 10:14:35", "2020-02-30 10:14:35");
    const err2 = await failure(collect(Readable.from([badTime]), { name: "bad.csv" }));
    expect(err2.message).toBe('bad.csv:4: time column: "2020-02-30 10:14:35" is not a time (expected e.g. 2020-03-09 10:14:33, 2020-03-09, ISO 8601 or epoch ms)');

    const short = SKAB_FIXTURE.replace("2020-03-09 10:14:36;0.0265747;", "2020-03-09 10:14:36;");
    const err3 = await failure(collect(Readable.from([short]), { name: "short.csv" }));
    expect(err3.message).toBe("short.csv:5: expected 11 cells as in the header, got 10");
  });

  it("refuses a measure outside the 32-bit float range (it would be encoded as Infinity), as a bad row", async () => {
    const big = SKAB_FIXTURE.replace("0.382638", "1e39");
    const err = await failure(collect(Readable.from([big]), { name: "big.csv" }));
    expect(err).toBeInstanceOf(CsvRowError);
    expect(err.message).toBe('big.csv:3: pressure column: "1e39" is outside the 32-bit float range (±3.4028234663852886e+38) the readings are encoded with');

    const skipped: CsvRowError[] = [];
    const tooBig = SKAB_FIXTURE.replace("0.382638", "3.5e38").replace("-0.273216", "-3.5e38");
    const recs = await collect(Readable.from([tooBig]), { name: "big.csv", onBadRow: "skip", onSkip: (e) => skipped.push(e) });
    expect(recs.map((r) => r.line)).toEqual([2, 5]);
    expect(skipped.map((e) => e.message)).toEqual([
      'big.csv:3: pressure column: "3.5e38" is outside the 32-bit float range (±3.4028234663852886e+38) the readings are encoded with',
      'big.csv:4: pressure column: "-3.5e38" is outside the 32-bit float range (±3.4028234663852886e+38) the readings are encoded with',
    ]);

    // FLT_MAX itself, and a value just above it that rounds to FLT_MAX in float32, are fine.
    const edge = SKAB_FIXTURE.replace("0.382638", "3.4028234663852886e38").replace("-0.273216", "-3.4028235e38");
    const ok = await collect(Readable.from([edge]));
    expect(ok.map((r) => r.reading.pressure)).toEqual([0.054711, 3.4028234663852886e38, -3.4028235e38, 0.054711]);
    expect(Math.fround(-3.4028235e38)).toBe(-3.4028234663852886e38);
  });

  it("reads measures in decimal notation only (not 0x10, 0b11, 0o17), NaN and Infinity refused, empty = null", async () => {
    for (const cell of ["0x10", "0b11", "0o17", "0X1F", "NaN", "Infinity", "-Infinity", "1e", "1.2.3", "--1", "+", ".", "1 000", "1_000"]) {
      const err = await failure(collect(Readable.from([SKAB_FIXTURE.replace("0.382638", cell)]), { name: "n.csv" }));
      expect(err, cell).toBeInstanceOf(CsvRowError);
      expect(err.message).toBe(`n.csv:3: pressure column: ${JSON.stringify(cell)} is not a number (expected a decimal number, e.g. 79.3366 or -1.5e-3)`);
    }
    const cells = ["16", " -3 ", "+15", ".5", "5.", "-1.5e-3", "2E+2", "0", ""];
    const recs = await collect(Readable.from([[SKAB_HEADER, ...cells.map((c, i) => `2020-03-09 10:14:${10 + i};0;0;0;${c};0;0;0;0;0;0`)].join("\n")]));
    expect(recs.map((r) => r.reading.pressure)).toEqual([16, -3, 15, 0.5, 5, -0.0015, 200, 0, null]);
  });

  it("skips bad rows when told to, reporting each with its line", async () => {
    const bad = SKAB_FIXTURE.replace("79.5158", "hot").replace("2020-03-09 10:14:36", "yesterday");
    const skipped: CsvRowError[] = [];
    const recs = await collect(Readable.from([bad]), { name: "bad.csv", onBadRow: "skip", onSkip: (e) => skipped.push(e) });
    expect(recs.map((r) => r.line)).toEqual([2, 4]);
    expect(recs.map((r) => r.seq)).toEqual([0, 1]);
    expect(skipped.map((e) => e.line)).toEqual([3, 5]);
    expect(skipped[0]!.message).toMatch(/^bad\.csv:3: temperature column: "hot"/);
  });

  it("says which columns there are when a mapped column is missing (or the delimiter is wrong)", async () => {
    const err = await failure(collect(Readable.from([SKAB_FIXTURE]), { name: "f.csv", mapping: parseMapping("temperature=Temp,time=datetime") }));
    expect(err).toBeInstanceOf(CsvHeaderError);
    expect(err.message).toMatch(/^f\.csv: column "Temp" \(mapped to temperature\) is not in the header; the columns are "datetime", "Accelerometer1RMS"/);
    const err2 = await failure(collect(Readable.from([SKAB_FIXTURE]), { name: "f.csv", delimiter: "," }));
    expect(err2.message).toMatch(/only one column: is the delimiter right\?/);
  });

  it("takes a custom mapping and delimiter; ISO times with zones, a date alone; unmapped measures are null", async () => {
    const csv = "ts,temp_c,vib\n2026-01-01T00:00:00Z,21.5,0.1\n2026-01-01T01:00:00+01:00,22,\n1767225600000,23.25,0.3\n2026-12-04,24,0.4\n";
    const recs = await collect(Readable.from([csv]), { delimiter: ",", mapping: parseMapping("time=ts,temperature=temp_c,vibration=vib") });
    expect(recs.map((r) => r.reading.time)).toEqual([Date.UTC(2026, 0, 1), Date.UTC(2026, 0, 1), 1767225600000, Date.UTC(2026, 11, 4)]);
    expect(recs.map((r) => [r.reading.temperature, r.reading.vibration, r.reading.pressure])).toEqual([
      [21.5, 0.1, null],
      [22, null, null],
      [23.25, 0.3, null],
      [24, 0.4, null],
    ]);
  });

  it("refuses a plain-integer time before 2001-09-09 as epoch ms (it looks like epoch seconds) instead of guessing", async () => {
    const csv = "ts,temp_c\n1796355600000,21.5\n1796355600,22\n1000000000000,23\n";
    const opts = { name: "s.csv", delimiter: ",", mapping: parseMapping("time=ts,temperature=temp_c") };
    const err = await failure(collect(Readable.from([csv]), opts));
    expect(err).toBeInstanceOf(CsvRowError);
    expect(err.message).toBe(
      's.csv:3: time column: "1796355600" as epoch milliseconds is 1970-01-21T18:59:15.600Z, before 2001-09-09: it looks like epoch seconds; ' +
        "the column must be epoch milliseconds (or ISO 8601)",
    );
    const skipped: CsvRowError[] = [];
    const recs = await collect(Readable.from([csv]), { ...opts, onBadRow: "skip", onSkip: (e) => skipped.push(e) });
    expect(recs.map((r) => r.reading.time)).toEqual([1796355600000, 1e12]);
    expect(skipped.map((e) => e.line)).toEqual([3]);

    expect(parseCsvTime("1796355600000")).toBe(Date.UTC(2026, 11, 4, 3, 40));
    expect(parseCsvTime(" 1000000000000 ")).toBe(1e12);
    expect(parseCsvTime("999999999999")).toBeUndefined();
    expect(parseCsvTime("1796355600")).toBeUndefined();
    expect(parseCsvTime("0")).toBeUndefined();
  });

  it("moves a file in time when asked, keeping the spacing", async () => {
    const at = Date.UTC(2026, 5, 1, 12);
    const recs = await collect(Readable.from([SKAB_FIXTURE]), { startAt: at });
    expect(recs.map((r) => r.reading.time - at)).toEqual([0, 1000, 2000, 3000]);
  });

  it("parses mappings, times and file-name ids", () => {
    expect(parseMapping("temperature=Temperature,vibration=Accelerometer1RMS,pressure=Pressure,flow_rate=Volume Flow RateRMS,time=datetime")).toEqual(SKAB_MAPPING);
    // `field=` unmaps a measure of the base (a CSV without that column); time cannot be unmapped.
    expect(parseMapping("flow_rate=,pressure=", SKAB_MAPPING)).toEqual({ time: "datetime", temperature: "Temperature", vibration: "Accelerometer1RMS" });
    expect(() => parseMapping("time=", SKAB_MAPPING)).toThrow(/no column given for time/);
    expect(parseMapping("vibration=Accelerometer2RMS", SKAB_MAPPING)).toEqual({ ...SKAB_MAPPING, vibration: "Accelerometer2RMS" });
    expect(() => parseMapping("humidity=RH,time=t")).toThrow(/unknown field "humidity"/);
    expect(() => parseMapping("temperature=T")).toThrow(/time column is required/);
    expect(() => parseMapping("temperature")).toThrow(/field=column/);

    expect(parseCsvTime("2020-03-09 10:14:33")).toBe(Date.UTC(2020, 2, 9, 10, 14, 33));
    expect(parseCsvTime("2020-03-09T10:14:33.250")).toBe(Date.UTC(2020, 2, 9, 10, 14, 33, 250));
    expect(parseCsvTime("2020-03-09 10:14:33+02:00")).toBe(Date.UTC(2020, 2, 9, 8, 14, 33));
    expect(parseCsvTime("2020-13-01 00:00:00")).toBeUndefined();
    // A date alone is its midnight, UTC like the other zone-less times; impossible dates are refused.
    expect(parseCsvTime("2026-12-04")).toBe(Date.UTC(2026, 11, 4));
    expect(parseCsvTime(" 2020-03-09 ")).toBe(Date.UTC(2020, 2, 9));
    expect(parseCsvTime("2020-02-30")).toBeUndefined();
    expect(parseCsvTime("2020-3-9")).toBeUndefined();
    expect(parseCsvTime("soon")).toBeUndefined();

    expect(equipmentIdFromPath("../shared/datasets/skab/valve1/3.csv")).toBe("valve1-03");
    expect(equipmentIdFromPath("valve2/12.csv")).toBe("valve2-12");
    expect(equipmentIdFromPath("/data/skab/anomaly-free/anomaly-free.csv")).toBe("anomaly-free");
    expect(equipmentIdFromPath("line 4 (press).csv")).toBe("line-4--press-");
    expect(equipmentIdFromPath("7.csv")).toBe("csv-07");
  });
});
