#!/usr/bin/env node
/**
 * `npm run test:node-lines`: the demo and the ava suite on every supported
 * Node line, one line after another; exits 1 if anything fails on any line.
 *
 *   npm run test:node-lines                # 20 (the system Node), 22, 24, 26
 *   npm run test:node-lines -- 24 26       # only these lines
 *
 * Needs a built tree (`npm install`). Node 22, 24 and 26 come from the npm
 * registry through scripts/node-lines.mjs (cached, never installed over the
 * system Node). The native addon is Node-API, so one build serves every
 * line: the demo runs on the shipped addon, ava on the testing addon
 * (ava.config.mjs), which this script builds or brings up to date first;
 * the bench competitor shm-typed-array is rebuilt per line. Each line's
 * `node` comes first on PATH, so everything the tests spawn runs on it.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { RUN_MARK, newSince, present } from './leftovers.mjs';
import { LINES, cachedLine, ensureLine } from './node-lines.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const requested = process.argv.slice(2).map(Number);
const lines = requested.length > 0 ? requested : LINES;

function systemNode(line) {
  const found = spawnSync('node', ['-p', 'process.execPath + " " + process.versions.node'], { encoding: 'utf8' });
  const [path, version] = (found.stdout ?? '').trim().split(' ');
  return Number(version?.split('.')[0]) === line ? path : null;
}

function step(node, label, args) {
  const env = { ...process.env, PATH: `${dirname(node)}:${process.env.PATH}`, [RUN_MARK]: String(process.pid) };
  // The demo runs on the shipped addon; ava sets this itself (ava.config.mjs).
  delete env.NAPI_RS_NATIVE_LIBRARY_PATH;
  console.log(`\n=== ${label}: ${node} ${args.join(' ')}`);
  const run = spawnSync(node, args, { cwd: root, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  process.stdout.write(run.stdout ?? '');
  return { ok: run.status === 0, stdout: run.stdout ?? '', status: run.status ?? run.signal };
}

// With the system Node and npm: cargo does the work, whatever the line.
console.log('=== the testing addon: npm run build:testing');
if (spawnSync('npm', ['run', 'build:testing'], { cwd: root, stdio: 'inherit' }).status !== 0) {
  console.error('FAIL: npm run build:testing');
  process.exit(1);
}

const summary = [];
for (const line of lines) {
  // `npm run node-lines` fetched the newest of each line; a cached one is used as it is.
  const node = (line === 20 ? systemNode(20) : null) ?? cachedLine(line) ?? ensureLine(line);
  const version = spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim();
  const before = present();
  step(node, `${version} shm-typed-array (bench competitor)`, ['benches/build-shm-typed-array.mjs']);
  const demo = step(node, `${version} demo`, ['--expose-gc', 'dist/src/demo.js']);
  const ava = step(node, `${version} ava`, ['node_modules/ava/entrypoints/cli.mjs']);
  const left = newSince(before, present(), String(process.pid)); // other users' pools left out
  const passed = String((ava.stdout.match(/^\s*✔/gm) ?? []).length);
  const failed = /(\d+) tests? failed/.exec(ava.stdout)?.[1] ?? (ava.ok ? '0' : '?');
  const skipped = /(\d+) tests? skipped/.exec(ava.stdout)?.[1] ?? '0';
  summary.push({
    version,
    demo: demo.ok ? 'ok' : `FAILED (${demo.status})`,
    ava: `${passed} passed, ${failed} failed, ${skipped} skipped${ava.ok ? '' : ` (exit ${ava.status})`}`,
    leftovers: left.length,
    ok: demo.ok && ava.ok && left.length === 0,
  });
  if (left.length > 0) console.error(`FAIL: ${version} left ${left.length} pool(s) behind: ${left.join('; ')}`);
}

console.log('\n=== Node lines');
for (const s of summary) {
  console.log(`${s.ok ? 'ok  ' : 'FAIL'} ${s.version.padEnd(9)} demo ${s.demo}; ava ${s.ava}; pools left behind: ${s.leftovers}`);
}
const good = summary.filter((s) => s.ok).length;
console.log(`Node lines green: ${good} of ${summary.length}`);
process.exit(good === summary.length ? 0 : 1);
