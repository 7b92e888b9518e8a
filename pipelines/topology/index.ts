export { loadTopology, parseTopology } from "./loader.ts";
export { describeTopology } from "./describe.ts";
export { COMPONENTS, componentSpec } from "./registry.ts";
export type { ComponentSpec, ComponentKind, DataKind } from "./component-spec.ts";
export { TopologyError } from "./plan.ts";
export type { BatchPlan, ProcessorPlan, RetryPlan, SinkPlan, SourcePlan, TopologyPlan, TopologyProblem } from "./plan.ts";
