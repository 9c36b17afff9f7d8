import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores, but most cases wait (on a TTL to expire, a broker to restart, a stream to
    // catch up) rather than compute: a third worker keeps the whole run near 10 minutes.
    maxWorkers: 3,
    reporters: ['default'],
    // Library logs are for operators; tests assert on behaviour. EVPUB_LOG_LEVEL=debug to see them.
    env: { EVPUB_LOG_LEVEL: process.env.EVPUB_LOG_LEVEL ?? 'silent' },
  },
});
