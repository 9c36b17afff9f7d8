/**
 * `evpub start [--config path] [--dir dir]`: run the publisher from configuration.
 *
 *   evpub start                          # evpub.config.{json,yaml,yml} or LoopBack's layout in .
 *   evpub start --config /srv/app/evpub.config.yaml
 *   evpub start --dir ./server           # datasources.json + model-config.json + evpub.json
 *
 * The configuration is validated before anything connects (an invalid one exits 1 with every
 * problem and its path). Logs go to stdout, level from `--log-level` or EVPUB_LOG_LEVEL (default
 * info), never with secrets: structured JSON (pino) when stdout is not a terminal, readable lines
 * on a terminal; `--pretty` / `--no-pretty` choose. SIGTERM/SIGINT stop reading, drain what
 * is in flight, save checkpoints, close, and exit 0 (1 when stopping failed); a second signal
 * during that exits at once. When every feed has failed (each has a `feed-failed` status: an
 * unrecoverable source error, `publisher.deadLetterLimit` reached, a dead letter refused), it
 * stops the same way and exits 3, so a supervisor sees it and restarts or alerts.
 *
 * It serves the management HTTP API (docs/operate.md) unless `http.enabled` is false: on
 * 127.0.0.1:7401 by default (`http.host`, `http.port`, or EVPUB_HTTP_PORT; port 0 picks a free
 * one), its address in the log line "management API listening at ...". The server answers
 * `/health` (and `/ready`: 503) while the publisher starts, and closes when it stops.
 */
import type { Command } from 'commander';
import { evpub } from '../app/app';
import { loadConfigFrom, redactConfig, type LoadedConfig } from '../app/config';
import { collectSecrets } from '../util/redact';
import { createLogger, type Logger } from '../logger';
import type { PublisherStatus } from '../pipeline/status';
import { describeTuning, tuneHeap, type HeapTuning } from './heap';
import { SnapshotMeter } from './progress';

interface StartFlags {
  config?: string;
  dir?: string;
  logLevel?: string;
  pretty?: boolean;
  v8Tuning?: boolean;
}

/** `evpub start`'s exit code when every feed failed. */
export const EXIT_ALL_FEEDS_FAILED = 3;

/**
 * The CLI's logger: pino on stdout, credentials censored like the library's default logger,
 * and `secrets` (the configuration's, `collectSecrets`) masked wherever they appear.
 */
export function stdoutLogger(level: string, pretty = false, secrets?: readonly string[]): Logger {
  return createLogger({
    level,
    destination: 1,
    pretty,
    colorize: pretty && process.stdout.isTTY && !process.env.NO_COLOR,
    ...(secrets ? { secrets } : {}),
  });
}

const WARN: PublisherStatus['type'][] = ['paused', 'retrying', 'dead-lettered', 'warning'];
const ERROR: PublisherStatus['type'][] = ['feed-failed', 'checkpoint-failed'];
const DEBUG: PublisherStatus['type'][] = ['checkpoint', 'published', 'resumed'];

/**
 * Cluster mode: a unit's change of owner and the lease store's state as one readable line each
 * (the fields stay structured: unit, instance, epoch, feeds, error).
 */
function logCluster(logger: Logger, status: Extract<PublisherStatus, { type: 'unit' | 'cluster' }>): void {
  if (status.type === 'cluster') {
    if (status.state === 'ok') logger.info({ cluster: status }, 'cluster: the lease store answers');
    else {
      const why = status.error ? ` (${status.error.code}: ${status.error.message})` : '';
      logger.warn(
        { cluster: status },
        `cluster: the lease store does not answer${why}; units whose lease cannot be renewed stop at their deadline`,
      );
    }
    return;
  }
  const { unit, event, instance, epoch, feeds, error } = status;
  const fields = { unit, event, instance, epoch, feeds, ...(error ? { error } : {}) };
  const list = feeds.join(', ') || 'no feeds';
  const why = error ? `: ${error.code} ${error.message}` : '';
  switch (event) {
    case 'acquired':
      logger.info(fields, `unit ${unit} acquired (epoch ${epoch}): publishing ${list}`);
      break;
    case 'released':
      logger.info(fields, `unit ${unit} released (epoch ${epoch}) after its final checkpoint: ${list}`);
      break;
    case 'lost':
      logger.warn(
        fields,
        `unit ${unit} lost (epoch ${epoch}), nothing more is published here for ${list}${why}`,
      );
      break;
    case 'failed':
      logger.error(
        fields,
        `unit ${unit} could not start (epoch ${epoch}); its lease is released for another instance${why}`,
      );
      break;
  }
}

export function logStatus(logger: Logger, status: PublisherStatus, meter = new SnapshotMeter()): void {
  const { type } = status;
  if (type === 'unit' || type === 'cluster') logCluster(logger, status);
  else if (type === 'connector' && status.status.type === 'snapshot') {
    // Snapshot progress: rows done / total, rate, time left, as a human-friendly line.
    const { model, done, total } = status.status;
    const progress = meter.report({ datasource: status.datasource, model, done, total });
    const { message, ...fields } = progress;
    logger.info({ snapshot: fields }, message);
  } else if (ERROR.includes(type)) logger.error({ status }, type);
  else if (type === 'paused' && status.reason === 'window-full') {
    // Backpressure, the normal state of a burst (the broker confirms slower than the source
    // reads): not worth a warning per window.
    logger.debug({ status }, type);
  } else if (WARN.includes(type)) logger.warn({ status }, type);
  else if (type === 'connector' && status.status.type === 'reconnecting') logger.warn({ status }, type);
  // Lag reports come every statusInterval per datasource or model: metrics, not log lines.
  else if (DEBUG.includes(type) || (type === 'connector' && status.status.type === 'lagging'))
    logger.debug({ status }, type);
  else logger.info({ status }, type);
}

export function registerStart(program: Command): void {
  program
    .command('start')
    .description('run the publisher from configuration (evpub.config.json|yaml or LoopBack layout)')
    .option('-c, --config <path>', 'configuration file (.json, .yaml, .yml, or model-config.json)')
    .option('-d, --dir <dir>', 'directory holding the configuration (default: the working directory)')
    .option('-l, --log-level <level>', 'trace, debug, info, warn, error (default: EVPUB_LOG_LEVEL or info)')
    .option('--pretty', 'readable log lines (the default on a terminal)')
    .option('--no-pretty', 'JSON log lines (the default when stdout is not a terminal)')
    .option('--no-v8-tuning', "keep node's garbage collector defaults (or EVPUB_V8_TUNING=off)")
    .action(async (flags: StartFlags) => {
      const heap = tuneHeap({ off: flags.v8Tuning === false });
      const loaded = loadConfigFrom({ file: flags.config, dir: flags.dir });
      await runPublisher(loaded, flags.logLevel, { pretty: flags.pretty ?? process.stdout.isTTY, heap });
    });
}

/** Runs the publisher of a loaded configuration until a signal stops it (`evpub start`). */
export async function runPublisher(
  loaded: LoadedConfig,
  logLevel?: string,
  options: { pretty?: boolean; heap?: HeapTuning } = {},
): Promise<void> {
  const logger = stdoutLogger(
    logLevel ?? process.env.EVPUB_LOG_LEVEL ?? 'info',
    options.pretty === true,
    collectSecrets(loaded.config),
  );
  logger.info(
    { files: loaded.files, layout: loaded.layout, config: redactConfig(loaded.config) },
    'configuration loaded',
  );
  if (options.heap) logger.info({ v8: options.heap }, describeTuning(options.heap));
  const app = evpub({ config: loaded.config, cwd: loaded.dir, logger });
  // Sources like the memory connector hold no socket: keep the process alive until stopped.
  const keepAlive = setInterval(() => undefined, 2 ** 30);
  const meter = new SnapshotMeter();
  let feeds: string[] = [];
  const failed = new Set<string>();
  let stopping = false;
  app.on('status', (status) => {
    logStatus(logger, status, meter);
    if (status.type === 'stopped') clearInterval(keepAlive);
    if (status.type === 'started') feeds = status.feeds;
    else if (status.type === 'feed-failed') failed.add(status.feed);
    else return;
    if (!stopping && feeds.length > 0 && feeds.every((f) => failed.has(f))) {
      stopping = true;
      logger.error({ feeds }, `every feed failed; stopping (exit code ${EXIT_ALL_FEEDS_FAILED})`);
      const exit = (): never => process.exit(EXIT_ALL_FEEDS_FAILED);
      app.stop().then(exit, exit);
    }
  });
  app.handleSignals();
  try {
    if (loaded.config.http?.enabled !== false) await app.listen();
    await app.start();
  } catch (err) {
    clearInterval(keepAlive);
    // The message goes to stderr (reportError); at debug, the error with its code, context and
    // the driver's cause chain (redacted like every line).
    logger.debug({ err }, 'start failed');
    await app.stop().catch(() => undefined); // closes the server
    throw err;
  }
}
