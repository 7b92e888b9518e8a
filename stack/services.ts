/** The services of the local stack, in start order (the registry needs nothing; the worker needs all). */
import type { StackService } from "./types.ts";
import { kafkaService } from "./kafka.ts";
import { registryService } from "./registry.ts";
import { postgresService } from "./postgres.ts";
import { s3Service } from "./s3.ts";

export const services: StackService[] = [
  postgresService,
  s3Service,
  kafkaService,
  registryService,
  // each service module adds itself here, e.g. `postgresService`
];
