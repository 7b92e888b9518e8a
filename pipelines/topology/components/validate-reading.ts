/** `type: validate_reading` — a decoded reading becomes a stored reading or a rejection with a reason. */
import { z } from "zod";
import { defineComponent } from "../component-spec.ts";
import { duration } from "../fields.ts";

const config = z.strictObject({
  max_future_skew: duration({ min: 0 })
    .prefault("5m")
    .describe("A reading timestamped further ahead of the worker's clock than this is rejected (time_in_future)."),
  tenant_refresh: duration({ min: 100 })
    .prefault("5s")
    .describe("How often the tenant directory (status, retention, limits) is re-read, so a suspension takes effect without a restart."),
});

export const validateReading = defineComponent({
  type: "validate_reading",
  kind: "processor",
  summary:
    "Checks each decoded reading: the payload's tenant matches its topic's, the tenant is active, the time is neither in the future nor past retention, measures are finite, ids are well formed. A failing reading is rejected with its reason.",
  config,
  framework: [],
  accepts: "decoded_readings",
  emits: "stored_readings",
  example: { id: "validate", entry: { inputs: ["decode"], max_future_skew: "5m", tenant_refresh: "5s" } },
  plan: ({ id, config: c, inputs }) => ({
    id,
    type: "validate_reading",
    input: inputs[0]!,
    maxFutureSkewMs: c.max_future_skew,
    tenantRefreshMs: c.tenant_refresh,
  }),
});
