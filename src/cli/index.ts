#!/usr/bin/env node
/**
 * `evpub`: the command line. One file per subcommand, each exporting `registerX(program)`;
 * this file only lists them. Errors: an EvpubError prints its message (no stack) to stderr and
 * the process exits 1; anything else prints its stack (it is a bug).
 */
import { createRequire } from 'node:module';
import { Command } from 'commander';
import { registerCheck } from './check';
import { registerCluster } from './cluster';
import { registerDeadLetters } from './dead-letters';
import { registerDemo } from './demo';
import { reportError } from './errors';
import { registerFeeds } from './feeds';
import { registerInit } from './init';
import { registerPub } from './pub';
import { registerSlots } from './slots';
import { registerSnapshot } from './snapshot';
import { registerStart } from './start';
import { registerStatus } from './status';
import { registerSub } from './sub';

const { version } = createRequire(__filename)('../../package.json') as { version: string };

const program = new Command('evpub')
  .description('evpub: capture changes from databases and apps, publish them to any broker')
  .version(version)
  .showHelpAfterError();

registerStart(program);
registerInit(program);
registerCheck(program);
registerPub(program);
registerSub(program);
registerDemo(program);
registerSlots(program);
registerSnapshot(program);
registerDeadLetters(program);
registerStatus(program);
registerCluster(program);
registerFeeds(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  reportError(err);
  // Exit now: a half-started command may hold sockets open (stderr is synchronous here).
  process.exit(1);
});
