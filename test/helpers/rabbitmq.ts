/**
 * A private RabbitMQ node for fault tests: its own node name, AMQP and distribution ports, and
 * data, log and config files in a temp dir, so stopping it never touches the shared broker.
 *
 * `stop()` halts it (`rabbitmqctl -n <node> stop <pidfile>` waits for the VM to exit);
 * `start()` boots it again on the same port with the same data, so durable queues, their
 * bindings and persistent messages survive. `close()` stops it and removes the files.
 *
 * The Debian `rabbitmq-server`/`rabbitmqctl` wrappers run as the `rabbitmq` user when started
 * by root, so the temp dir is handed to that user. Needs root or the `rabbitmq` user.
 *
 * With `{ tls }` the node also listens for AMQP over TLS (`tlsUrl`, `amqps://`) with the given
 * server certificate, asks clients for a certificate signed by `tls.ca` (verify_peer, not
 * required), and offers SASL EXTERNAL (the rabbitmq_auth_mechanism_ssl plugin; the user is
 * the client certificate's common name). `ctl(args)` runs rabbitmqctl against this node.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { freePort, isListening, uniqueName } from './services';
import { waitFor } from './wait';

const run = promisify(execFile);

async function rabbitmqUser(): Promise<{ uid: number; gid: number } | undefined> {
  if (userInfo().uid !== 0) return undefined;
  const { stdout } = await run('id', ['-u', 'rabbitmq']);
  const { stdout: g } = await run('id', ['-g', 'rabbitmq']);
  return { uid: Number(stdout.trim()), gid: Number(g.trim()) };
}

export interface PrivateRabbitMqOptions {
  tls?: { ca: string; cert: string; key: string };
  /**
   * Users made at boot (from a definitions file: no rabbitmqctl round trip, ~4 s each), with
   * these permissions on vhost `/` (regular expressions; `.*` each by default), beside guest/guest.
   */
  users?: {
    name: string;
    password: string;
    permissions?: { configure: string; write: string; read: string };
  }[];
}

/** RabbitMQ's default password hash: base64(salt + sha256(salt + password)), 4-byte salt. */
function passwordHash(password: string): string {
  const salt = randomBytes(4);
  const digest = createHash('sha256').update(salt).update(password, 'utf8').digest();
  return Buffer.concat([salt, digest]).toString('base64');
}

export interface PrivateRabbitMq extends PrivateBroker {
  /** `amqps://guest:guest@localhost:PORT` when started with `tls`. */
  tlsUrl?: string;
  /** The TLS listener's port when started with `tls`. */
  tlsPort?: number;
  /** Runs `rabbitmqctl -n <node> ...args` (e.g. `['add_user', name, password]`). */
  ctl(args: string[]): Promise<string>;
}

export async function startPrivateRabbitMq(options: PrivateRabbitMqOptions = {}): Promise<PrivateRabbitMq> {
  const port = await freePort();
  const distPort = await freePort();
  const tlsPort = options.tls ? await freePort() : undefined;
  const dir = await mkdtemp(join(tmpdir(), 'evpub-rabbitmq-'));
  const node = `${uniqueName('evpub')}@localhost`;
  const files = {
    config: join(dir, 'rabbitmq.conf'),
    plugins: join(dir, 'enabled_plugins'),
    pid: join(dir, 'node.pid'),
    mnesia: join(dir, 'mnesia'),
    log: join(dir, 'log'),
  };
  await mkdir(files.mnesia);
  await mkdir(files.log);
  const config = [`listeners.tcp.local = 127.0.0.1:${port}`];
  const owned: string[] = [];
  if (options.tls) {
    // The node runs as the rabbitmq user: copies of the certificates it can read.
    const copy = async (from: string, name: string): Promise<string> => {
      const to = join(dir, name);
      await writeFile(to, await readFile(from), { mode: 0o600 });
      owned.push(to);
      return to;
    };
    config.push(
      `listeners.ssl.local = 127.0.0.1:${tlsPort}`,
      `ssl_options.cacertfile = ${await copy(options.tls.ca, 'ca.pem')}`,
      `ssl_options.certfile = ${await copy(options.tls.cert, 'server.pem')}`,
      `ssl_options.keyfile = ${await copy(options.tls.key, 'server.key')}`,
      'ssl_options.verify = verify_peer',
      'ssl_options.fail_if_no_peer_cert = false',
      'ssl_cert_login_from = common_name',
      'auth_mechanisms.1 = PLAIN',
      'auth_mechanisms.2 = AMQPLAIN',
      'auth_mechanisms.3 = EXTERNAL',
    );
  }
  if (options.users) {
    const users = [{ name: 'guest', password: 'guest' }, ...options.users];
    const definitions = join(dir, 'definitions.json');
    await writeFile(
      definitions,
      JSON.stringify({
        vhosts: [{ name: '/' }],
        users: users.map((u) => ({
          name: u.name,
          password_hash: passwordHash(u.password),
          hashing_algorithm: 'rabbit_password_hashing_sha256',
          tags: u.name === 'guest' ? ['administrator'] : [],
        })),
        permissions: users.map((u) => ({
          user: u.name,
          vhost: '/',
          ...((u as { permissions?: object }).permissions ?? { configure: '.*', write: '.*', read: '.*' }),
        })),
      }),
    );
    owned.push(definitions);
    config.push(`load_definitions = ${definitions}`);
  }
  await writeFile(files.config, config.join('\n') + '\n');
  await writeFile(files.plugins, options.tls ? '[rabbitmq_auth_mechanism_ssl].\n' : '[].\n');
  const owner = await rabbitmqUser();
  if (owner) {
    for (const p of [dir, ...owned, ...Object.values(files).filter((f) => f !== files.pid)]) {
      await chown(p, owner.uid, owner.gid);
    }
  }
  const env = {
    ...process.env,
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: files.mnesia,
    RABBITMQ_LOG_BASE: files.log,
    RABBITMQ_CONFIG_FILE: files.config,
    RABBITMQ_ENABLED_PLUGINS_FILE: files.plugins,
    RABBITMQ_PID_FILE: files.pid,
  };
  let running = false;

  const start = async (): Promise<void> => {
    await run('rabbitmq-server', ['-detached'], { env });
    running = true;
    // await_startup fails at once until the node has registered with epmd; retry until it waits.
    await waitFor(
      () =>
        run('rabbitmqctl', ['-n', node, 'await_startup', '--timeout', '60'], { env }).then(
          () => true,
          () => false,
        ),
      `private RabbitMQ node ${node} to start`,
      90_000,
    );
    await waitFor(() => isListening(port), `private RabbitMQ on port ${port}`);
    if (tlsPort !== undefined)
      await waitFor(() => isListening(tlsPort), `private RabbitMQ TLS on ${tlsPort}`);
  };

  const stop = async (): Promise<void> => {
    if (!running) return;
    running = false;
    await run('rabbitmqctl', ['-n', node, 'stop', files.pid], { env });
    await waitFor(async () => !(await isListening(port)), `port ${port} to be free`);
  };

  await start();
  return {
    url: `amqp://guest:guest@127.0.0.1:${port}`,
    ...(tlsPort !== undefined && { tlsUrl: `amqps://guest:guest@localhost:${tlsPort}`, tlsPort }),
    ctl: async (args) => (await run('rabbitmqctl', ['-n', node, ...args], { env })).stdout,
    start,
    stop,
    async close() {
      await stop().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface RabbitMqUser {
  /** The broker URL with this user's credentials. */
  url: string;
  /** Deletes the user. */
  remove(): Promise<void>;
}

/**
 * A user of the shared RabbitMQ (vhost `/`, full configure/write/read permissions) whose topic
 * permissions on `exchange` allow publishing only with routing keys matching `writeKeys` (a
 * regular expression): publishing with another key is refused with 403 ACCESS_REFUSED.
 * `remove()` deletes it; call it in a `finally`.
 */
export async function rabbitMqUserWithTopicWrite(
  baseUrl: string,
  exchange: string,
  writeKeys: string,
): Promise<RabbitMqUser> {
  const user = uniqueName('evpub');
  const password = uniqueName('pw');
  await run('rabbitmqctl', ['add_user', user, password]);
  const remove = async (): Promise<void> => {
    await run('rabbitmqctl', ['delete_user', user]).catch(() => undefined);
  };
  try {
    await run('rabbitmqctl', ['set_permissions', '-p', '/', user, '.*', '.*', '.*']);
    await run('rabbitmqctl', ['set_topic_permissions', '-p', '/', user, exchange, writeKeys, '.*']);
  } catch (err) {
    await remove();
    throw err;
  }
  const url = new URL(baseUrl);
  url.username = user;
  url.password = password;
  return { url: url.toString(), remove };
}
