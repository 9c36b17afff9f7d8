/**
 * NATS decentralized auth for tests, without `nsc`: an operator, an account and a user, their
 * JWTs signed with NKeys, the server configuration that trusts them (operator mode, memory
 * resolver) and the user's `.creds` file text.
 *
 *   const auth = natsOperator();
 *   privateNatsServer({ config: auth.serverConfig });
 *   createClient(url, { nats: { creds: auth.creds } });
 */
import { randomUUID } from 'node:crypto';
import { nkeys } from '@nats-io/transport-node';

type KeyPair = ReturnType<typeof nkeys.createUser>;

const b64url = (data: Uint8Array | string): string => Buffer.from(data).toString('base64url');

function jwt(issuer: KeyPair, subject: KeyPair, name: string, nats: Record<string, unknown>): string {
  const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' }));
  const claims = {
    jti: randomUUID().replace(/-/g, '').toUpperCase(),
    iat: Math.floor(Date.now() / 1000),
    iss: issuer.getPublicKey(),
    name,
    sub: subject.getPublicKey(),
    nats: { ...nats, version: 2 },
  };
  const body = `${header}.${b64url(JSON.stringify(claims))}`;
  return `${body}.${b64url(issuer.sign(new TextEncoder().encode(body)))}`;
}

export interface NatsOperator {
  /** nats-server configuration: `operator`, `resolver: MEMORY`, the account preloaded. */
  serverConfig: string;
  /** A `.creds` file's text for a user of the account. */
  creds: string;
  /** The user's JWT and seed, for asserting that neither leaks. */
  userJwt: string;
  userSeed: string;
}

export function natsOperator(): NatsOperator {
  const operator = nkeys.createOperator();
  const account = nkeys.createAccount();
  const user = nkeys.createUser();
  const unlimited = { subs: -1, data: -1, payload: -1 };
  const operatorJwt = jwt(operator, operator, 'evpub-test-operator', { type: 'operator' });
  const accountJwt = jwt(operator, account, 'evpub-test-account', {
    type: 'account',
    limits: { ...unlimited, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 },
    default_permissions: { pub: {}, sub: {} },
  });
  const userJwt = jwt(account, user, 'evpub-test-user', { type: 'user', pub: {}, sub: {}, ...unlimited });
  const userSeed = new TextDecoder().decode(user.getSeed());
  return {
    serverConfig:
      `operator: ${operatorJwt}\nresolver: MEMORY\n` +
      `resolver_preload: {\n  ${account.getPublicKey()}: ${accountJwt}\n}\n`,
    creds:
      `-----BEGIN NATS USER JWT-----\n${userJwt}\n------END NATS USER JWT------\n\n` +
      `-----BEGIN USER NKEY SEED-----\n${userSeed}\n------END USER NKEY SEED------\n`,
    userJwt,
    userSeed,
  };
}
