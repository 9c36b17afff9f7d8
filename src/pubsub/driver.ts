/**
 * `loadDriver` lives in src/util/driver.ts (the bottom layer: connectors and checkpoint stores
 * load drivers too). This re-export keeps the broker adapters' imports as they are until they
 * import it from there.
 */
export { loadDriver } from '../util/driver';
