// Preloaded (node --import) by .ci/node24.sh into every process of the Node 24 test run.
// Native addons in node_modules are built for the Node that ran `npm ci` (20): loading one in
// Node 24 fails on the ABI. .ci/node24.sh rebuilds them for Node 24 into EVPUB_ADDON_DIR; this
// hook resolves `node_modules/<pkg>/build/Release/<file>.node` to `<EVPUB_ADDON_DIR>/<pkg>/<file>.node`
// when that file exists, and leaves every other resolution alone. node_modules is not touched.
import { existsSync } from 'node:fs';
import module from 'node:module';
import { basename, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const dir = process.env.EVPUB_ADDON_DIR;
const addon = /[\\/]node_modules[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)[\\/]build[\\/]Release[\\/]([^\\/]+\.node)$/;

if (dir && typeof module.registerHooks === 'function') {
  module.registerHooks({
    resolve(specifier, context, nextResolve) {
      const result = nextResolve(specifier, context);
      const file = result.url?.startsWith('file:') ? fileURLToPath(result.url) : undefined;
      const m = file && addon.exec(file);
      if (!m) return result;
      const rebuilt = join(dir, m[1], basename(m[2]));
      return existsSync(rebuilt) ? { ...result, url: pathToFileURL(rebuilt).href } : result;
    },
  });
}
