/**
 * Why a NATS connection over TLS failed, when nats.js cannot say.
 *
 * With TLS 1.3 a server judges the client's certificate after the client has finished its side
 * of the handshake: the refusal arrives as an alert on the first read. nats.js (3.x) keeps that
 * error on its transport and waits for the server's PONG until its timeout, so the first connect
 * fails with a bare timeout. When a connect over TLS fails without a reason, the adapter asks
 * `probeNatsTls()` (util/tls.ts `probeTls` is the same for protocols where the client speaks
 * first): one connection the NATS way (the server's INFO in plain text, then the
 * handshake, then `CONNECT` and `PING`), returning the socket error that ends it, or undefined
 * when the server answered (TLS was not the problem). Bounded by `timeoutMs`; leaves no socket.
 */
import { connect as netConnect, isIP } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { LoadedTls } from '../../util/tls';

export function probeNatsTls(
  host: string,
  port: number,
  tls: LoadedTls,
  timeoutMs: number,
): Promise<Error | undefined> {
  return new Promise((resolve) => {
    const plain = netConnect(port, host);
    let secure: ReturnType<typeof tlsConnect> | undefined;
    let settled = false;
    const done = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      secure?.destroy();
      plain.destroy();
      resolve(err);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    plain.once('error', (err) => done(err));
    let info = '';
    const onInfo = (chunk: Buffer): void => {
      info += chunk.toString('latin1');
      if (!info.includes('\r\n')) return;
      plain.off('data', onInfo);
      const servername = tls.servername ?? (isIP(host) === 0 ? host : undefined);
      secure = tlsConnect({ ...tls, socket: plain, host, ...(servername ? { servername } : {}) });
      secure.once('error', (err: Error) => done(err));
      secure.once('secureConnect', () => {
        secure?.write('CONNECT {"verbose":false,"pedantic":false,"tls_required":true}\r\nPING\r\n');
      });
      // Any answer (PONG, or -ERR about credentials) means the TLS session works.
      secure.once('data', () => done(undefined));
      secure.once('close', () => done(undefined));
    };
    plain.on('data', onInfo);
  });
}
