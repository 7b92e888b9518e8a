import { defineConfig } from "vitest/config";

// Two projects: `unit` (pure logic, beside the code and in test/unit) and `integration` (real local
// services, test/integration). Integration files run one at a time: they share one Kafka broker and
// one database, and the machine has two cores.
export default defineConfig({
  test: {
    fileParallelism: false,
    projects: [
      {
        test: {
          name: "unit",
          include: ["{pipelines,schemas,sinks,lib,cli,stack,migrations,tenants,bench,produce}/**/*.test.ts", "test/unit/**/*.test.ts"],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          testTimeout: 180_000,
          hookTimeout: 180_000,
          globalSetup: ["test/helpers/global-setup.ts"],
        },
      },
    ],
  },
});
