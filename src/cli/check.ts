/**
 * `evpub check [--config path] [--dir dir] [--json]`: what the configuration's sources and
 * brokers still need before capture can work, every finding at once with the command that fixes
 * it (PostgreSQL wal_level, a role with REPLICATION, replica identity; MariaDB/MySQL binlog
 * format and row image, grants, tables; each broker reachable). Nothing is created or started.
 * Exit 0 when nothing is in the way (warnings allowed), 1 otherwise.
 */
import type { Command } from 'commander';
import { checkConfig, type CheckReport } from '../app/check';
import { loadConfigFrom } from '../app/config';
import { builtinConnectors } from '../connectors/registry';
import { createLogger } from '../logger';
import { builtinAdapters } from '../pubsub/registry';

interface CheckFlags {
  config?: string;
  dir?: string;
  json?: boolean;
}

const MARK = { ok: '✓', warning: '!', error: '✗' } as const;

/** The report as lines for a person: one per finding, its fix indented below. */
export function formatReport(report: CheckReport): string {
  const lines: string[] = [];
  for (const [ds, checks] of Object.entries(report.datasources)) {
    lines.push(`datasource ${ds}`);
    for (const c of checks) {
      lines.push(`  ${MARK[c.level]} ${c.what}: ${c.detail}`);
      if (c.fix && c.level !== 'ok') lines.push(`      fix: ${c.fix}`);
    }
  }
  for (const c of Object.values(report.brokers)) {
    lines.push(`${MARK[c.level]} ${c.what}: ${c.detail}`);
    if (c.fix && c.level !== 'ok') lines.push(`    fix: ${c.fix}`);
  }
  lines.push(report.ok ? 'ready: evpub start can capture' : 'not ready: fix the ✗ findings above');
  return lines.join('\n');
}

export function registerCheck(program: Command): void {
  program
    .command('check')
    .description('tell what the sources and brokers still need before capture can work, with the fixes')
    .option('-c, --config <path>', 'configuration file (.json, .yaml, .yml, or model-config.json)')
    .option('-d, --dir <dir>', 'directory holding the configuration (default: the working directory)')
    .option('--json', 'print the report as JSON')
    .action(async (flags: CheckFlags) => {
      const loaded = loadConfigFrom({ file: flags.config, dir: flags.dir });
      const report = await checkConfig(loaded.config, {
        registry: builtinConnectors(),
        adapters: builtinAdapters(),
        cwd: loaded.dir,
        logger: createLogger({ level: process.env.EVPUB_LOG_LEVEL ?? 'silent' }),
      });
      console.log(flags.json ? JSON.stringify(report, null, 2) : formatReport(report));
      process.exitCode = report.ok ? 0 : 1;
    });
}
