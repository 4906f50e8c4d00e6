import { dirname, join } from 'node:path';

/**
 * The statechart picture generated from the machine (`npm run viz`), shipped in the hubstate
 * package: found through the package's own manifest, so it works from the repository (a
 * workspace link), a build, and an install.
 */
export function deviceSvgPath(): string {
  return join(dirname(require.resolve('hubstate/package.json')), 'visualizations', 'device.svg');
}
