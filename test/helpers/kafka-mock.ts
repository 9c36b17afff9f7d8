/**
 * A Kafka cluster for tests: librdkafka's mock cluster, which speaks the real Kafka protocol,
 * started inside a `kcat` process (there is no Kafka server on this machine). kcat prints the
 * cluster's address on stderr ("... replaced with 127.0.0.1:PORT"); we wait for that line.
 *
 * Differences from a real broker the tests must know about: the mock reports no controller
 * (so CreateTopics is impossible and topics are auto-created with 4 partitions), does not
 * enforce message.max.bytes, and joins consumer groups after a ~3 s rebalance delay.
 *
 * When KAFKA_BROKERS is set (`host:port,host:port`), `kafkaCluster()` uses that real cluster.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface KafkaCluster {
  /** `host:port` of each bootstrap broker. */
  brokers: string[];
  /** `kafka://host:port,...` */
  url: string;
  /** The port of the (first) mock broker; undefined for a real cluster. */
  mockPort?: number;
  close(): Promise<void>;
}

const ADDRESS = /(?:bootstrap\.servers=|replaced with )(\d+\.\d+\.\d+\.\d+):(\d+)/;

/** Starts a 1-broker librdkafka mock cluster in a kcat child process. */
export function startKafkaMock(timeoutMs = 15_000): Promise<KafkaCluster> {
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(
        'kcat',
        ['-X', 'test.mock.num.brokers=1', '-b', 'unused:9092', '-C', '-t', 'evpub-mock-keepalive', '-q'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    let stderr = '';
    let settled = false;
    const timer = setTimeout(
      () => fail(new Error(`kcat printed no mock cluster address in ${timeoutMs} ms`)),
      timeoutMs,
    );
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(err);
    };
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.once('error', (err: NodeJS.ErrnoException) => {
      fail(
        err.code === 'ENOENT'
          ? new Error('kcat is not installed; the Kafka tests need it: apt-get install kcat')
          : err,
      );
    });
    child.once('exit', (code, signal) => {
      fail(new Error(`kcat exited (${code ?? signal}) before the mock cluster was up: ${stderr.trim()}`));
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      if (settled) return; // keep draining so kcat never blocks on a full pipe
      stderr += chunk;
      const m = ADDRESS.exec(stderr);
      if (!m) return;
      settled = true;
      clearTimeout(timer);
      const port = Number(m[2]);
      const broker = `${m[1]}:${port}`;
      resolve({
        brokers: [broker],
        url: `kafka://${broker}`,
        mockPort: port,
        async close() {
          if (child.exitCode === null && child.signalCode === null) {
            child.kill('SIGTERM');
            await exited;
          }
        },
      });
    });
  });
}

/** The cluster the tests use: KAFKA_BROKERS when set, else a fresh mock. */
export async function kafkaCluster(): Promise<KafkaCluster> {
  const env = process.env.KAFKA_BROKERS?.trim();
  if (env) {
    const brokers = env.split(',').map((b) => b.trim());
    return { brokers, url: `kafka://${brokers.join(',')}`, close: async () => undefined };
  }
  return startKafkaMock();
}
