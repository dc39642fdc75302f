/**
 * Jest runs the TypeScript sources through SWC, as two projects that say what their tests need:
 *   unit     test/unit: no I/O, so no servers are started for it (`npm test -- --selectProjects unit`)
 *   servers  everything else, against the real Redis, MariaDB and PostgreSQL that globalSetup starts
 * `npm test` runs both; a path filter (`npm test -- test/unit/config.test.ts`) starts servers only when a
 * selected test needs them.
 */
const shared = {
  rootDir: import.meta.dirname,
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2024', parser: { syntax: 'typescript' } }, module: { type: 'es6' } }] },
  extensionsToTreatAsEsm: ['.ts'],
  testTimeout: 60_000,
  // Tools, image builds and server data live here: never crawled for modules (an image's files broke the map).
  modulePathIgnorePatterns: ['<rootDir>/.tools/', '<rootDir>/.cluster/', '<rootDir>/.stack/', '<rootDir>/.bench/'],
};

export default {
  // Also a global option: set only inside the projects, tests and hooks got jest's 5 s.
  testTimeout: 60_000,
  projects: [
    {
      ...shared,
      displayName: 'unit',
      testMatch: ['<rootDir>/test/unit/**/*.test.ts'],
    },
    {
      ...shared,
      displayName: 'servers',
      testMatch: ['<rootDir>/test/**/*.test.ts'],
      testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/unit/'],
      globalSetup: '<rootDir>/test/support/global-setup.ts',
      globalTeardown: '<rootDir>/test/support/global-teardown.ts',
    },
  ],
};
