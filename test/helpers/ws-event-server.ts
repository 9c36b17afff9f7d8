/**
 * A WebSocket event server for the websocket connector's tests (ws's WebSocketServer).
 *
 * It keeps a log of every event sent; each gets a cursor `seq` (1, 2, ...). On each connection
 * the server first replays, when the URL has `?since=<seq>`, every logged event after that seq
 * (`since=0`: all), then sends `{"type":"hello","seq":<last seq>}` (unless `hello: false`),
 * then live events. Events carry `channel`; a client that sent
 * `{"type":"subscribe","channel":c}` gets only channel c from then on, before that every
 * channel. `requireToken` refuses upgrades without `authorization: Bearer <token>` (HTTP 401).
 *
 *   const server = await startWsEventServer();
 *   server.send({ channel: 'orders', op: 'created', id: 'a' });   // logged and broadcast
 *   server.sendRaw('not json');                                   // not logged
 *   server.drop();           // terminate every connection (the server stays up)
 *   await server.stop(); await server.start();   // same port; the log is kept
 *
 * `tls: { cert, key }` (PEM file paths, e.g. from makePki()) serves wss:// instead.
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { WebSocketServer, type WebSocket } from 'ws';

export interface WsEventServer {
  url: string;
  port: number;
  /** Connections accepted so far (with their request URL). */
  connections: { url: string; headers: Record<string, string | string[] | undefined> }[];
  /** Open client sockets now. */
  clients(): WebSocket[];
  send(event: Record<string, unknown>): number;
  sendRaw(text: string): void;
  drop(): void;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export interface WsEventServerOptions {
  requireToken?: string;
  /** False: the server never answers pings (a dead peer, as far as heartbeats go). */
  autoPong?: boolean;
  /** Send `{"type":"hello","seq":<last seq>}` on each connection (default true). */
  hello?: boolean;
  /** Serve wss:// with this certificate and key (file paths). */
  tls?: { cert: string; key: string };
}

interface Client {
  ws: WebSocket;
  channel: string | undefined;
}

export async function startWsEventServer(options: WsEventServerOptions = {}): Promise<WsEventServer> {
  const log: Record<string, unknown>[] = [];
  const clients = new Set<Client>();
  const connections: WsEventServer['connections'] = [];
  let http: Server | undefined;
  let wss: WebSocketServer | undefined;
  let port = 0;

  const deliver = (client: Client, event: Record<string, unknown>): void => {
    if (client.channel === undefined || client.channel === event.channel)
      client.ws.send(JSON.stringify(event));
  };

  const start = async (): Promise<void> => {
    if (http) return;
    const server: Server = options.tls
      ? createHttpsServer({ cert: readFileSync(options.tls.cert), key: readFileSync(options.tls.key) })
      : createServer();
    const ws = new WebSocketServer({
      server,
      autoPong: options.autoPong ?? true,
      verifyClient: (info, cb) => {
        if (options.requireToken && info.req.headers.authorization !== `Bearer ${options.requireToken}`) {
          cb(false, 401, 'Unauthorized');
        } else cb(true);
      },
    });
    ws.on('connection', (socket, req) => {
      const url = new URL(req.url ?? '/', 'http://x');
      connections.push({ url: url.pathname + url.search, headers: req.headers });
      const client: Client = { ws: socket, channel: undefined };
      clients.add(client);
      socket.on('close', () => clients.delete(client));
      socket.on('message', (data) => {
        try {
          const m = JSON.parse((data as Buffer).toString('utf8')) as { type?: string; channel?: string };
          if (m.type === 'subscribe') client.channel = m.channel;
        } catch {
          // ignored
        }
      });
      // Replay first, then the hello with the current cursor, then live events.
      const since = url.searchParams.get('since');
      if (since !== null)
        for (const event of log) if ((event.seq as number) > Number(since)) deliver(client, event);
      if (options.hello ?? true) socket.send(JSON.stringify({ type: 'hello', seq: log.length }));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    port = typeof address === 'object' && address ? address.port : port;
    http = server;
    wss = ws;
  };

  const stop = async (): Promise<void> => {
    if (!http || !wss) return;
    for (const c of clients) c.ws.terminate();
    clients.clear();
    const [h, w] = [http, wss];
    http = undefined;
    wss = undefined;
    await new Promise<void>((resolve) => w.close(() => resolve()));
    h.closeAllConnections();
    await new Promise<void>((resolve) => h.close(() => resolve()));
  };

  await start();
  return {
    url: `${options.tls ? 'wss' : 'ws'}://127.0.0.1:${port}/events`,
    port,
    connections,
    clients: () => [...clients].map((c) => c.ws),
    send(event) {
      const seq = log.length + 1;
      const logged = { seq, ...event };
      log.push(logged);
      for (const c of clients) deliver(c, logged);
      return seq;
    },
    sendRaw(text) {
      for (const c of clients) c.ws.send(text);
    },
    drop() {
      for (const c of clients) c.ws.terminate();
    },
    stop,
    start,
    close: stop,
  };
}
