/** Every component type topology.yaml can name, by `type:`. A new component is one file in components/ and one line here. */
import type { ComponentSpec } from "./component-spec.ts";
import { avroDecode } from "./components/avro-decode.ts";
import { equipmentQuota } from "./components/equipment-quota.ts";
import { kafkaDeadLetter } from "./components/kafka-dead-letter.ts";
import { kafkaTenantTopics } from "./components/kafka-tenant-topics.ts";
import { thresholds } from "./components/thresholds.ts";
import { timescaleCopy } from "./components/timescale-copy.ts";
import { validateReading } from "./components/validate-reading.ts";
import { s3Parquet } from "./components/s3-parquet.ts";

/** In docs order: sources, then processors in flow order, then sinks. */
export const COMPONENTS: readonly ComponentSpec[] = [kafkaTenantTopics, avroDecode, validateReading, equipmentQuota, thresholds, timescaleCopy, s3Parquet, kafkaDeadLetter];

const byType = new Map(COMPONENTS.map((c) => [c.type, c]));

export function componentSpec(type: string): ComponentSpec | undefined {
  return byType.get(type);
}
