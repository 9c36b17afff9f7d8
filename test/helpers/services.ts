/**
 * The services the tests talk to, and a check that fails with the command that starts one
 * when it is not running (tests never skip silently because a service is down).
 */
import { createServer, connect } from 'node:net';
import { randomUUID } from 'node:crypto';

export const SERVICES = {
  postgres: {
    port: 5432,
    url: 'postgres://postgres@127.0.0.1:5432/test',
    start: 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start',
  },
  mariadb: {
    port: 3306,
    url: 'mysql://root@127.0.0.1:3306/test',
    start: 'start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd',
  },
  redis: {
    port: 6379,
    url: 'redis://127.0.0.1:6379',
    start:
      'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log',
  },
  rabbitmq: { port: 5672, url: 'amqp://guest:guest@127.0.0.1:5672', start: 'rabbitmq-server -detached' },
  mosquitto: {
    port: 1883,
    url: 'mqtt://127.0.0.1:1883',
    start: 'mosquitto -d -c /etc/mosquitto/mosquitto.conf',
  },
  nats: {
    port: 4222,
    url: 'nats://127.0.0.1:4222',
    start:
      'start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log',
  },
} as const;

export type ServiceName = keyof typeof SERVICES;

export function isListening(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Throws, naming the start command, unless the service is listening. Returns its URL. */
export async function requireService(name: ServiceName): Promise<string> {
  const svc = SERVICES[name];
  if (!(await isListening(svc.port))) {
    throw new Error(`${name} is not running on 127.0.0.1:${svc.port}; start it with: ${svc.start}`);
  }
  return svc.url;
}

/** A free TCP port on 127.0.0.1 (for brokers a test starts itself). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A unique name for a topic, table, slot, queue...: `t_<uuid without dashes>`. */
export function uniqueName(prefix = 't'): string {
  return `${prefix}_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
}
