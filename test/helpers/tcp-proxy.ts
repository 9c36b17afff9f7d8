/**
 * A small TCP proxy for fault tests: it listens on a fixed port in front of a real server and
 * can be stopped (the listener closes and every open connection is destroyed, so clients see a
 * real connection cut) and started again on the same port (clients reconnect to it).
 *
 *   const proxy = await startTcpProxy({ host: '127.0.0.1', port: serverPort });
 *   // clients use 127.0.0.1:proxy.port
 *   await proxy.stop();   // like the server going down
 *   await proxy.start();  // like the server coming back, same address
 *   await proxy.close();
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { freePort } from './services';

export interface TcpProxy {
  /** The port the proxy listens on (stable across stop/start). */
  readonly port: number;
  readonly host: string;
  /** Whether the proxy accepts connections now. */
  readonly running: boolean;
  /** Closes the listener and destroys every open connection. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
  /** Stops for good. */
  close(): Promise<void>;
}

export interface TcpProxyOptions {
  /** Where connections go. */
  host: string;
  port: number;
  /** Port to listen on; a free one by default. */
  listenPort?: number;
  listenHost?: string;
}

export async function startTcpProxy(options: TcpProxyOptions): Promise<TcpProxy> {
  const listenHost = options.listenHost ?? '127.0.0.1';
  const port = options.listenPort ?? (await freePort());
  const sockets = new Set<Socket>();
  let server: Server | undefined;

  const onConnection = (client: Socket): void => {
    const upstream = connect({ host: options.host, port: options.port });
    sockets.add(client);
    sockets.add(upstream);
    const cut = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', cut).on('close', cut);
    upstream.on('error', cut).on('close', cut);
    client.pipe(upstream);
    upstream.pipe(client);
  };

  const proxy: TcpProxy = {
    port,
    host: listenHost,
    get running() {
      return server !== undefined;
    },
    async start() {
      if (server) return;
      const s = createServer(onConnection);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(port, listenHost, () => {
          s.off('error', reject);
          resolve();
        });
      });
      server = s;
    },
    async stop() {
      const s = server;
      server = undefined;
      // Stop accepting first, so nothing reconnects between the cut and the close.
      const closed = s ? new Promise<void>((resolve) => s.close(() => resolve())) : Promise.resolve();
      for (const socket of sockets) socket.destroy();
      sockets.clear();
      await closed;
    },
    close() {
      return proxy.stop();
    },
  };
  await proxy.start();
  return proxy;
}
