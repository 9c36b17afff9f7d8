import type { TlsSettings } from '../util/tls';

/** Where checkpoints are kept (`checkpoints:` in the configuration); see each store. */
export type CheckpointConfig =
  | { store: 'file'; path?: string }
  | {
      store: 'redis';
      url: string;
      prefix?: string;
      tls?: boolean | TlsSettings;
      /** ACL user and password, instead of the URL's. */
      username?: string;
      password?: string;
    }
  | { store: 'postgres'; url: string; table?: string; tls?: boolean | TlsSettings }
  | { store: 'memory' };
