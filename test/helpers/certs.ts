/**
 * Certificates for TLS tests, made by the test run with `openssl` (nothing is committed):
 *
 *   const pki = makePki();            // once per test file (about a second)
 *   pki.ca                            // the CA certificate (PEM file path)
 *   pki.server                        // { cert, key } for localhost / 127.0.0.1 / ::1
 *   pki.client                        // { cert, key } a client certificate (CN "evpub")
 *   pki.expired                       // a server certificate for localhost that expired in 2020
 *   pki.wrongHost                     // a server certificate for "elsewhere.example" only
 *   pki.otherCa                       // a CA that signed none of these
 *   pki.untrusted                     // a client certificate signed by otherCa
 *   pki.encrypted(pki.client, 'pw')   // the same pair, its key encrypted (AES-256) with that passphrase
 *   pki.dir                           // the directory, removed by pki.remove()
 *
 * Every key is unencrypted PEM (but those `encrypted()` writes), mode 0600 (PostgreSQL refuses a key readable by others).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CertPair {
  cert: string;
  key: string;
}

export interface Pki {
  dir: string;
  ca: string;
  caKey: string;
  server: CertPair;
  client: CertPair;
  expired: CertPair;
  wrongHost: CertPair;
  otherCa: string;
  untrusted: CertPair;
  /** Another client certificate from the CA, with this common name (a user name for cert auth). */
  clientFor(commonName: string): CertPair;
  /** `pair` with its key encrypted by `passphrase` (PKCS#8, AES-256-CBC), in a new file. */
  encrypted(pair: CertPair, passphrase: string): CertPair;
  remove(): void;
}

const openssl = (args: string[], cwd: string): void => {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
};

function makeCa(dir: string, name: string): { cert: string; key: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '30',
      '-subj',
      `/CN=${name}`,
    ],
    dir,
  );
  chmodSync(key, 0o600);
  return { cert, key };
}

function issue(
  dir: string,
  ca: { cert: string; key: string },
  name: string,
  options: { cn: string; san?: string; client?: boolean; expired?: boolean },
): CertPair {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const ext = join(dir, `${name}.ext`);
  openssl(
    ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${options.cn}`],
    dir,
  );
  chmodSync(key, 0o600);
  writeFileSync(
    ext,
    [
      'basicConstraints=CA:FALSE',
      `extendedKeyUsage=${options.client ? 'clientAuth' : 'serverAuth,clientAuth'}`,
      ...(options.san ? [`subjectAltName=${options.san}`] : []),
    ].join('\n') + '\n',
  );
  if (options.expired) {
    // `openssl x509 -req` cannot backdate (3.0): sign through `openssl ca` with explicit dates.
    const db = join(dir, `${name}.db`);
    writeFileSync(db, '');
    writeFileSync(join(dir, `${name}.serial`), '1000\n');
    const conf = join(dir, `${name}.cnf`);
    writeFileSync(
      conf,
      [
        '[ca]',
        'default_ca = ca',
        '[ca]',
        `database = ${db}`,
        `serial = ${join(dir, `${name}.serial`)}`,
        `new_certs_dir = ${dir}`,
        'default_md = sha256',
        'policy = any',
        'copy_extensions = none',
        '[any]',
        'commonName = supplied',
      ].join('\n') + '\n',
    );
    openssl(
      [
        'ca',
        '-batch',
        '-config',
        conf,
        '-cert',
        ca.cert,
        '-keyfile',
        ca.key,
        '-in',
        csr,
        '-out',
        cert,
        '-startdate',
        '20200101000000Z',
        '-enddate',
        '20200102000000Z',
        '-extfile',
        ext,
        '-notext',
      ],
      dir,
    );
  } else {
    openssl(
      [
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        ca.cert,
        '-CAkey',
        ca.key,
        '-CAcreateserial',
        '-out',
        cert,
        '-days',
        '30',
        '-sha256',
        '-extfile',
        ext,
      ],
      dir,
    );
  }
  return { cert, key };
}

export function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'evpub-pki-'));
  const ca = makeCa(dir, 'ca');
  const other = makeCa(dir, 'other-ca');
  const localSan = 'DNS:localhost,IP:127.0.0.1,IP:::1';
  let encryptedCount = 0;
  return {
    dir,
    ca: ca.cert,
    caKey: ca.key,
    server: issue(dir, ca, 'server', { cn: 'localhost', san: localSan }),
    client: issue(dir, ca, 'client', { cn: 'evpub', client: true }),
    expired: issue(dir, ca, 'expired', { cn: 'localhost', san: localSan, expired: true }),
    wrongHost: issue(dir, ca, 'wrong-host', { cn: 'elsewhere.example', san: 'DNS:elsewhere.example' }),
    otherCa: other.cert,
    untrusted: issue(dir, other, 'untrusted', { cn: 'evpub', client: true }),
    clientFor: (cn) => issue(dir, ca, `client-${cn.replace(/[^a-z0-9]/gi, '_')}`, { cn, client: true }),
    encrypted: (pair, passphrase) => {
      const key = pair.key.replace(/\.key$/, `-encrypted-${++encryptedCount}.key`);
      // The passphrase through the environment, not the command line (ps would show it).
      execFileSync(
        'openssl',
        [
          'pkcs8',
          '-topk8',
          '-v2',
          'aes-256-cbc',
          '-in',
          pair.key,
          '-out',
          key,
          '-passout',
          'env:EVPUB_TEST_PASSPHRASE',
        ],
        {
          cwd: dir,
          stdio: ['ignore', 'ignore', 'pipe'],
          env: { ...process.env, EVPUB_TEST_PASSPHRASE: passphrase },
        },
      );
      chmodSync(key, 0o600);
      return { cert: pair.cert, key };
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
