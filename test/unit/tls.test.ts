import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, EvpubError } from '../../src/errors';
import { loadTls, parseTls, tlsFailure } from '../../src/util/tls';
import { makePki, type CertPair, type Pki } from '../helpers/certs';

let pki: Pki;
beforeAll(() => {
  pki = makePki();
});
afterAll(() => pki.remove());

async function serve(pair: CertPair, requireClientCert = false): Promise<{ port: number; server: Server }> {
  const server = createServer(
    {
      cert: readFileSync(pair.cert),
      key: readFileSync(pair.key),
      ca: readFileSync(pki.ca),
      requestCert: requireClientCert,
      rejectUnauthorized: requireClientCert,
    },
    (socket) => socket.end('hello'),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, server };
}

async function attempt(port: number, tls: Record<string, unknown>): Promise<EvpubError | 'ok'> {
  const options = loadTls(parseTls(tls, 'x.tls')!, 'x.tls', { endpoint: `localhost:${port}` });
  return new Promise((resolve) => {
    // TLS 1.3: the server judges a client certificate after the client's handshake is done, so
    // success is the server's first bytes, not the handshake.
    const socket = connect({ host: 'localhost', port, ...options });
    socket.on('data', () => {
      socket.end();
      resolve('ok');
    });
    socket.on('close', () => resolve(new EvpubError(ErrorCode.CONNECT_FAILED, 'closed by the server')));
    socket.on('error', (err: Error) =>
      resolve(tlsFailure(err, `localhost:${port}`) ?? new EvpubError(ErrorCode.CONNECT_FAILED, err.message)),
    );
  });
}

describe('TLS settings and failures (src/util/tls.ts), against a real TLS server', () => {
  it('connects with the private CA; names the reason for an untrusted CA, an expired certificate and a wrong host', async () => {
    const good = await serve(pki.server);
    const expired = await serve(pki.expired);
    const wrong = await serve(pki.wrongHost);
    try {
      expect(await attempt(good.port, { ca: pki.ca })).toBe('ok');
      const untrusted = await attempt(good.port, { ca: pki.otherCa });
      expect(untrusted).toMatchObject({ code: ErrorCode.TLS_FAILED });
      expect((untrusted as EvpubError).message).toMatch(/not signed by a CA evpub trusts.*tls\.ca/);
      const old = await attempt(expired.port, { ca: pki.ca });
      expect((old as EvpubError).message).toMatch(/expired/);
      const name = await attempt(wrong.port, { ca: pki.ca });
      expect((name as EvpubError).message).toMatch(/not for this host name/);
      expect(await attempt(wrong.port, { ca: pki.ca, servername: 'elsewhere.example' })).toBe('ok');
    } finally {
      for (const s of [good, expired, wrong]) s.server.close();
    }
  });

  it('a server that requires a client certificate: accepted with one from its CA, a clear error without', async () => {
    const mtls = await serve(pki.server, true);
    try {
      expect(await attempt(mtls.port, { ca: pki.ca, cert: pki.client.cert, key: pki.client.key })).toBe('ok');
      const refused = await attempt(mtls.port, {
        ca: pki.ca,
        cert: pki.untrusted.cert,
        key: pki.untrusted.key,
      });
      // Node's server closes without an alert for an unknown CA: no TLS code to name.
      expect(refused).toBeInstanceOf(EvpubError);
      const none = await attempt(mtls.port, { ca: pki.ca });
      expect(none).toMatchObject({ code: ErrorCode.TLS_FAILED });
      expect((none as EvpubError).message).toMatch(/server refused the TLS handshake.*tls\.cert/);
    } finally {
      mtls.server.close();
    }
  });

  it('settings: a closed schema naming the nearest key; an unreadable file named, a key file never echoed', () => {
    expect(() => parseTls({ rejectUnauthorised: false }, 'brokers.main.options.tls')).toThrow(
      /brokers\.main\.options\.tls\.rejectUnauthorised: unknown TLS setting; did you mean rejectUnauthorized\?/,
    );
    expect(() => parseTls({ cert: pki.client.cert }, 't')).toThrow(/t\.key: a client certificate needs both/);
    expect(() => loadTls({ ca: '/nope/ca.pem' }, 't', { endpoint: 'e' })).toThrow(
      /t\.ca: cannot read "\/nope\/ca.pem" \(ENOENT\)/,
    );
    expect(() => loadTls({ cert: pki.client.cert, key: '/secret/path.key' }, 't', { endpoint: 'e' })).toThrow(
      /t\.key: cannot read the key file \(ENOENT\)$/,
    );
    expect(parseTls(true, 't')).toEqual({});
    expect(parseTls(undefined, 't')).toBeUndefined();
  });

  it('an encrypted key: opened by its passphrase (file or PEM text, PKCS#8 or legacy PEM), else CONFIG_INVALID naming tls.passphrase, never echoed', async () => {
    const passphrase = 'pp-unit-Secr3t';
    const pkcs8 = pki.encrypted(pki.client, passphrase);
    const legacy = `${pki.dir}/client-legacy.key`;
    execFileSync(
      'openssl',
      [
        'rsa',
        '-aes256',
        '-traditional',
        '-in',
        pki.client.key,
        '-out',
        legacy,
        '-passout',
        `pass:${passphrase}`,
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const { port, server } = await serve(pki.server, true);
    try {
      for (const key of [pkcs8.key, legacy, readFileSync(pkcs8.key, 'utf8')]) {
        expect(readFileSync(key.startsWith('-----') ? pkcs8.key : key, 'utf8')).toContain('ENCRYPTED');
        const tls = { ca: pki.ca, cert: pki.client.cert, key };
        expect(await attempt(port, { ...tls, passphrase })).toBe('ok');
        for (const [wrong, rule] of [
          [
            'not-the-passphrase',
            /^x\.tls\.passphrase: does not open the key \(x\.tls\.key\): wrong passphrase$/,
          ],
          [undefined, /^x\.tls\.passphrase: the key \(x\.tls\.key\) is encrypted: set x\.tls\.passphrase/],
        ] as const) {
          const err = await attempt(port, wrong === undefined ? tls : { ...tls, passphrase: wrong }).catch(
            (e: unknown) => e as EvpubError,
          );
          expect(err).toBeInstanceOf(EvpubError);
          expect((err as EvpubError).code).toBe(ErrorCode.CONFIG_INVALID);
          expect((err as EvpubError).message).toMatch(rule);
          expect(`${(err as EvpubError).message} ${JSON.stringify((err as EvpubError).context)}`).not.toMatch(
            /not-the-passphrase|pp-unit|PRIVATE KEY/,
          );
        }
      }
    } finally {
      server.close();
    }
  });
});
