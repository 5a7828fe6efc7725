import { defineConfig } from 'vitest/config';

// Four projects: fast unit tests next to the code, integration tests that
// start real servers (gRPC on loopback, PostgreSQL, PGlite), browser tests of
// the dashboard (Chromium through playwright-core, real coordinator), and
// end-to-end tests that run the coordinator and clients as separate processes.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts', 'examples/*/*.test.ts'],
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['packages/*/test/**/*.test.ts'],
          exclude: ['packages/*/test/browser/**'],
          testTimeout: 180_000,
          hookTimeout: 120_000,
          // Two files at a time (vitest's default on a 2-core machine is one worker): every file has
          // its own databases (veil_test_<random>, fresh PGlite directories), temporary directories
          // and port-0 listeners, and the files mostly wait on PostgreSQL, timers and sockets.
          // Its own group: the e2e and browser projects still run alone, one file at a time, after it.
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
        },
      },
      {
        // The dashboard in Debian's Chromium (playwright-core) against a real coordinator.
        test: {
          name: 'browser',
          include: ['packages/*/test/browser/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['e2e/**/*.test.ts'],
          testTimeout: 900_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
