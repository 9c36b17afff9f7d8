/**
 * A real browser for tests: Debian's Chromium (`.ci/services.sh` installs it) driven by
 * playwright-core, headless, never a downloaded browser build.
 *
 *   const browser = await launchBrowser();
 *   const page = await browser.newPage();
 *   ...
 *   await browser.close();
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: run \`bash .ci/services.sh\` (it installs Debian's chromium)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
    ],
  });
}
