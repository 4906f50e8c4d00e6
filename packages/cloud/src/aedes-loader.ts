/**
 * Loads aedes 1.x (an ES module) from this CommonJS package.
 *
 * Plain Node >= 20.19 can `require()` ES modules, but Jest's module registry cannot. In that case aedes is loaded through Node's own
 * CommonJS loader (a fresh `Module` whose `require` is Node's, not Jest's), which is safe here
 * because aedes keeps no state shared with test code.
 */
import NodeModule = require('node:module');

/** The aedes module namespace. */
export type AedesModule = typeof import('aedes');

let cached: AedesModule | undefined;

interface LoaderModule {
  filename: string;
  paths: string[];
  require(id: string): unknown;
}

/** Returns the aedes module, loading it on first use. */
export function loadAedes(): AedesModule {
  if (cached) return cached;
  try {
    cached = require('aedes') as AedesModule;
  } catch {
    // Jest 30 says ERR_REQUIRE_ESM, Jest 29 a SyntaxError; a missing aedes fails again below.
    const ModuleCtor = NodeModule as unknown as {
      new (id: string): LoaderModule;
      _nodeModulePaths(dir: string): string[];
    };
    const m = new ModuleCtor(__filename);
    m.filename = __filename;
    m.paths = ModuleCtor._nodeModulePaths(__dirname);
    cached = m.require('aedes') as AedesModule;
  }
  return cached;
}
