import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * The hubstate package's root directory: the nearest ancestor of this file with a package.json
 * named "hubstate". Works from src/ (tests), dist/ (a build) and node_modules/hubstate/ (installed).
 */
export function packageRoot(from = __dirname): string {
  let dir = from;
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === 'hubstate') return dir;
      } catch {
        // not ours; keep looking
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`hubstate: package root not found above ${from}`);
    dir = parent;
  }
}

/** The statechart picture generated from the machine (`npm run viz`), shipped in the package. */
export function deviceSvgPath(): string {
  return join(packageRoot(), 'visualizations', 'device.svg');
}
