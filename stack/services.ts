/** The services of the local stack, in start order (the registry needs nothing; the worker needs all). */
import type { StackService } from "./types.ts";

export const services: StackService[] = [
  // each service module adds itself here, e.g. `postgresService`
];
