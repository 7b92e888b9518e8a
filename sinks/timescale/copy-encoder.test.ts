import { describe, expect, it } from "vitest";
import { encodeCopyRow, escapeCopyText } from "./copy-encoder.ts";

describe("COPY text encoding", () => {
  it("escapes backslash, tab, newline and carriage return; leaves the rest alone", () => {
    expect(escapeCopyText("pump\\200")).toBe("pump\\\\200");
    expect(escapeCopyText("C:\\new\\tank")).toBe("C:\\\\new\\\\tank");
    expect(escapeCopyText("A\tB\nC\r")).toBe("A\\tB\\nC\\r");
    expect(escapeCopyText("\\N")).toBe("\\\\N");
    expect(escapeCopyText("")).toBe("");
    expect(escapeCopyText("plain-id_01")).toBe("plain-id_01");
  });
  it("writes nulls as \\N and times as UTC instants", () => {
    const line = encodeCopyRow({ offset: 3, time: Date.parse("1969-12-31T23:59:59Z"), tenantId: "t", equipmentId: "e", facilityId: "f", temperature: null, vibration: 0.5, pressure: -1, flow_rate: null });
    expect(line).toBe("3\t1969-12-31T23:59:59.000Z\tt\te\tf\t\\N\t0.5\t-1\t\\N\n");
  });
});
