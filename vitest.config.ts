import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores: more workers only make the brokers' tests fight for the CPU.
    maxWorkers: 2,
    reporters: ['default'],
    // Library logs are for operators; tests assert on behaviour. EVPUB_LOG_LEVEL=debug to see them.
    env: { EVPUB_LOG_LEVEL: process.env.EVPUB_LOG_LEVEL ?? 'silent' },
  },
});
