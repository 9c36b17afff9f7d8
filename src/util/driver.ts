/**
 * Lazy loading of broker and database drivers.
 *
 * Drivers are optional dependencies: an application that only uses MQTT need not install
 * kafkajs. `loadDriver('kafkajs', 'Kafka adapter')` imports the package on first use and turns
 * "module not found" into a DRIVER_MISSING error that names the package to install.
 */
import { ErrorCode, EvpubError } from '../errors';

const cache = new Map<string, Promise<unknown>>();

function isNotFound(err: unknown, pkg: string): boolean {
  const e = err as { code?: string; message?: string };
  return (
    (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_MODULE_NOT_FOUND') &&
    typeof e.message === 'string' &&
    e.message.includes(pkg)
  );
}

/** Imports `pkg` (once per process) and returns its `module.exports`,
 * or rejects with DRIVER_MISSING naming it and who needs it. */
export function loadDriver<T>(pkg: string, who: string): Promise<T> {
  let loading = cache.get(pkg);
  if (!loading) {
    // Every driver we load is CommonJS: its module.exports is the namespace's `default`.
    loading = import(pkg)
      .then((ns: { default?: unknown }) => ns.default ?? ns)
      .catch((err: unknown) => {
        cache.delete(pkg);
        if (isNotFound(err, pkg)) {
          throw new EvpubError(
            ErrorCode.DRIVER_MISSING,
            `The ${who} needs the "${pkg}" package, which is not installed: run \`npm install ${pkg}\``,
            { cause: err, context: { package: pkg } },
          );
        }
        throw err;
      });
    cache.set(pkg, loading);
  }
  return loading as Promise<T>;
}
