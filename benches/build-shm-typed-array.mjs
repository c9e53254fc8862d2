/**
 * Root `postinstall` step: makes sure the native addon of the devDependency
 * `shm-typed-array` (a bench competitor) is built.
 *
 * npm 11 runs a dependency's install script only if `allowScripts` in
 * package.json approves it (the exact version is approved there; a newer
 * one, or an npm that skips dependency scripts, would leave the addon
 * unbuilt). The root package's own scripts always run, so this step builds
 * the addon with node-gyp when it does not load — and does nothing when npm
 * already built it, or when devDependencies were not installed at all.
 * node-gyp is on PATH inside npm scripts, and npm's `nodedir` config reaches
 * it as `npm_config_nodedir`, so the headers come from the local Node install.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';

const require = createRequire(import.meta.url);

let packageJson;
try {
  packageJson = require.resolve('shm-typed-array/package.json');
} catch {
  process.exit(0); // devDependencies omitted: nothing to build.
}
const folder = dirname(packageJson);

function loads() {
  try {
    require('shm-typed-array');
    return true;
  } catch {
    return false;
  }
}

if (existsSync(`${folder}/build/Release/shm.node`) && loads()) process.exit(0);

console.log(`building shm-typed-array's addon in ${folder} (node-gyp rebuild)`);
const nodeGyp = process.env.npm_config_node_gyp;
const [command, args] = nodeGyp ? [process.execPath, [nodeGyp, 'rebuild']] : ['node-gyp', ['rebuild']];
const result = spawnSync(command, args, { cwd: folder, stdio: 'inherit' });
if (result.status !== 0 || !loads()) {
  console.error('shm-typed-array failed to build: `npm run bench` will skip its rows');
  // Benchmarks are optional for an install: do not fail it.
}
