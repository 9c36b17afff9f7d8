/**
 * An HTTPS front for a plain-HTTP test server (the CouchDB test server, an API): TLS ends here
 * with the certificate given (e.g. from makePki()), and every request is passed on to `target`
 * and its answer streamed back as it comes (a continuous feed stays continuous).
 *
 *   const front = await httpsProxy({ target: couch.url, cert: pki.server.cert, key: pki.server.key });
 *   // clients use front.url (https://127.0.0.1:<port>/)
 *   await front.close();
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';

export interface HttpsProxy {
  url: string;
  close(): Promise<void>;
}

export async function httpsProxy(options: {
  target: string;
  cert: string;
  key: string;
}): Promise<HttpsProxy> {
  const target = new URL(options.target);
  const server = createServer(
    { cert: readFileSync(options.cert), key: readFileSync(options.key) },
    (req, res) => {
      const upstream = request(
        {
          host: target.hostname,
          port: target.port,
          method: req.method,
          path: req.url,
          headers: { ...req.headers, host: target.host },
        },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          res.flushHeaders();
          answer.pipe(res);
        },
      );
      upstream.on('error', () => res.destroy());
      res.on('close', () => upstream.destroy());
      req.pipe(upstream);
    },
  );
  // A client that refuses the certificate resets its connection: not the test's failure.
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
