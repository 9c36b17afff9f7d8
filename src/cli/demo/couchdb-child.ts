/**
 * The child process of `startCouchServer({ inProcess: false })`: starts the server in this
 * process, sends `{ port }` (or `{ error }`) to the parent, and exits when the parent goes away.
 */
import { startCouchServer, type CouchServerOptions } from './couchdb-server';

const options = JSON.parse(process.argv[2] ?? '{}') as CouchServerOptions;
process.on('disconnect', () => process.exit(0));
startCouchServer({ ...options, inProcess: true }).then(
  (server) => process.send?.({ port: server.port }),
  (err: unknown) => {
    process.send?.({ error: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  },
);
