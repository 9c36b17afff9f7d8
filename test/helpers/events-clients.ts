/**
 * Clients of the live event stream for tests: an SSE reader over node:http (no browser here:
 * it parses the stream as EventSource does) and a WebSocket reader over `ws`.
 */
import http from 'node:http';
import WebSocket from 'ws';
import { deferred } from './wait';

export interface SseMessage {
  id?: string;
  event: string;
  data: string;
}

export interface SseClient {
  status: number;
  messages: SseMessage[];
  comments: string[];
  ended: Promise<void>;
  isEnded(): boolean;
  res: http.IncomingMessage;
  body: string;
  close(): void;
}

/** Opens `url` as an event stream; resolves once the response headers arrived. */
export function openSse(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
  const opened = deferred<SseClient>();
  const req = http.get(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
    const ended = deferred();
    let ending = false;
    let buffer = '';
    const client: SseClient = {
      status: res.statusCode ?? 0,
      messages: [],
      comments: [],
      ended: ended.promise,
      isEnded: () => ending,
      res,
      body: '',
      close: () => req.destroy(),
    };
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      client.body += chunk;
      buffer += chunk;
      let at: number;
      while ((at = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        const message: SseMessage = { event: 'message', data: '' };
        const data: string[] = [];
        let isMessage = false;
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) {
            client.comments.push(line.slice(1).trim());
            continue;
          }
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          isMessage = true;
          if (field === 'id') message.id = value;
          else if (field === 'event') message.event = value;
          else if (field === 'data') data.push(value);
        }
        if (isMessage && data.length > 0) {
          message.data = data.join('\n');
          client.messages.push(message);
        }
      }
    });
    const end = (): void => {
      ending = true;
      ended.resolve();
    };
    res.on('end', end);
    res.on('close', end);
    res.on('error', end);
    opened.resolve(client);
  });
  req.on('error', (err) => opened.reject(err));
  return opened.promise;
}

export interface WsMessage {
  type: string;
  id?: string;
  model?: string;
  topic?: string;
  event?: unknown;
  reason?: string;
  lastEventId?: string;
}

export interface WsClient {
  socket: WebSocket;
  messages: WsMessage[];
  closed: Promise<{ code: number; reason: string }>;
  isClosed(): boolean;
}

/** Opens a WebSocket to `url`; resolves once it is open. */
export function openWs(url: string): Promise<WsClient> {
  const opened = deferred<WsClient>();
  const socket = new WebSocket(url);
  const closed = deferred<{ code: number; reason: string }>();
  let isClosed = false;
  const client: WsClient = { socket, messages: [], closed: closed.promise, isClosed: () => isClosed };
  socket.on('message', (data: Buffer) =>
    client.messages.push(JSON.parse(data.toString('utf8')) as WsMessage),
  );
  socket.on('close', (code, reason) => {
    isClosed = true;
    closed.resolve({ code, reason: reason.toString('utf8') });
  });
  socket.on('open', () => opened.resolve(client));
  socket.on('error', (err) => opened.reject(err));
  return opened.promise;
}
