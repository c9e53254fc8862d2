#!/usr/bin/env node
/**
 * `npm run test:stranger`: arraypool as a stranger gets it. The tarballs of
 * `npm run package` (the main package and arraypool-linux-x64-gnu; built
 * first when missing), installed into a fresh folder outside the repository
 * with cargo and rustc off PATH, then on each Node line:
 *
 *   - `npm install` of the two tarballs: no EBADENGINE, no install script;
 *   - README's forked-worker example, saved as main.mjs and worker.mjs, prints true;
 *   - `npx arraypool ls` works;
 *   - `import` and `require('arraypool')` both work, and are one module
 *     where Node has require(esm); `--no-experimental-require-module` (what
 *     Node releases before 20.19 / 22.12 do) gets the CommonJS build;
 *   - without arraypool-linux-x64-gnu, loading says which package is missing
 *     (ERR_NATIVE_ADDON_MISSING).
 *
 * Once: TypeScript (the repository's tsc) compiles an .mts that imports and
 * a .cts that requires arraypool, each against the installed types.
 *
 *   npm run test:stranger                  # Node 20 (system), 22, 24, 26
 *   npm run test:stranger -- 24 26         # these lines
 *   npm run test:stranger -- --repack      # rebuild the tarballs first
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { RUN_MARK, newSince, present } from './leftovers.mjs';
import { LINES, cachedLine, ensureLine } from './node-lines.mjs';
import { writeReadmeExample } from './readme-example.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tarballs = join(root, 'target', 'package', 'tarballs');
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const MAIN = join(tarballs, `arraypool-${version}.tgz`);
const PLATFORM = 'arraypool-linux-x64-gnu';
const ADDON = join(tarballs, `${PLATFORM}-${version}.tgz`);

const args = process.argv.slice(2);
const requested = args.filter((a) => /^\d+$/.test(a)).map(Number);
const lines = requested.length > 0 ? requested : LINES;

if (args.includes('--repack') || !existsSync(MAIN) || !existsSync(ADDON)) {
  console.log('=== packing: node scripts/package.mjs x86_64-unknown-linux-gnu');
  const pack = spawnSync(process.execPath, ['scripts/package.mjs', 'x86_64-unknown-linux-gnu'], { cwd: root, stdio: 'inherit' });
  if (pack.status !== 0) process.exit(1);
}

/** PATH with the line's node first and no folder that holds cargo or rustc. */
function strangerPath(node) {
  const kept = (process.env.PATH ?? '').split(delimiter).filter((d) => !['cargo', 'rustc'].some((t) => existsSync(join(d, t))));
  return [dirname(node), ...kept].join(delimiter);
}

function systemNode(line) {
  const found = spawnSync('node', ['-p', 'process.execPath + " " + process.versions.node'], { encoding: 'utf8' });
  const [path, v] = (found.stdout ?? '').trim().split(' ');
  return Number(v?.split('.')[0]) === line ? path : null;
}

const failures = [];
let passed = 0;
function check(label, ok, detail = '') {
  if (ok) passed += 1;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${label}${ok || !detail ? '' : `\n${detail}`}`);
  if (!ok) failures.push(label);
}

function sh(dir, env, command, commandArgs) {
  // RUN_MARK: a pool still held by a process without it is another user's.
  const run = spawnSync(command, commandArgs, { cwd: dir, env: { ...env, [RUN_MARK]: String(process.pid) }, encoding: 'utf8', timeout: 300_000 });
  return { ok: run.status === 0, out: `${run.stdout ?? ''}${run.stderr ?? ''}`, stdout: (run.stdout ?? '').trim() };
}

// One workload for import and require: a pooled array, written and read.
const WORKLOAD = `startPool(); const x = makeTransferable(Float64Array.of(1, 2, 3)); x.array[1] = 7;
  const same = revive(JSON.parse(JSON.stringify({ x }))).x; const v = same.array[1]; same.release(); x.release();`;

function strangerDir() {
  const dir = mkdtempSync(join(tmpdir(), 'arraypool-stranger-'));
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ name: 'stranger', private: true, type: 'module' })}\n`);
  return dir;
}

function runLine(line) {
  const node = (line === 20 ? systemNode(20) : null) ?? cachedLine(line) ?? ensureLine(line);
  const env = { ...process.env, PATH: strangerPath(node) };
  delete env.NAPI_RS_NATIVE_LIBRARY_PATH;
  delete env.npm_config_nodedir;
  const nodeVersion = sh(root, env, 'node', ['--version']).stdout;
  console.log(`\n=== ${nodeVersion} (${node}), cargo and rustc off PATH`);
  check(`${nodeVersion}: node on PATH is the line's`, nodeVersion.startsWith(`v${line}.`), nodeVersion);
  check(`${nodeVersion}: no cargo on PATH`, !sh(root, env, 'cargo', ['--version']).ok);

  const dir = strangerDir();
  try {
    const install = sh(dir, env, 'npm', ['install', '--no-audit', '--no-fund', MAIN, ADDON]);
    check(`${nodeVersion}: npm install of the two tarballs`, install.ok, install.out);
    check(`${nodeVersion}: no EBADENGINE`, !install.out.includes('EBADENGINE'), install.out);
    const installed = JSON.parse(readFileSync(join(dir, 'node_modules', 'arraypool', 'package.json'), 'utf8'));
    check(`${nodeVersion}: the installed arraypool has no scripts`, installed.scripts === undefined, JSON.stringify(installed.scripts));

    writeReadmeExample(dir);
    const example = sh(dir, env, 'node', ['main.mjs']);
    check(`${nodeVersion}: README example prints true`, example.ok && example.stdout === 'true', example.out);

    const ls = sh(dir, env, 'npx', ['arraypool', 'ls']);
    check(`${nodeVersion}: npx arraypool ls`, ls.ok, ls.out);
    console.log(ls.stdout.split('\n').map((l) => `     ${l}`).join('\n'));

    const esm = sh(dir, env, 'node', ['--input-type=module', '-e',
      `import { makeTransferable, revive, startPool } from 'arraypool'; ${WORKLOAD} console.log(v);`]);
    check(`${nodeVersion}: import 'arraypool'`, esm.ok && esm.stdout === '7', esm.out);
    const cjs = sh(dir, env, 'node', ['--input-type=commonjs', '-e',
      `const { makeTransferable, revive, startPool, Pool } = require('arraypool'); ${WORKLOAD}
       import('arraypool').then((m) => console.log(v, m.Pool === Pool));`]);
    check(`${nodeVersion}: require('arraypool'), the same module as import`, cjs.ok && cjs.stdout === '7 true', cjs.out);
    const cjsBuild = sh(dir, env, 'node', ['--no-experimental-require-module', '--input-type=commonjs', '-e',
      `const { makeTransferable, revive, startPool } = require('arraypool'); ${WORKLOAD}
       console.log(v, Object.keys(require.cache).some((f) => f.includes('/arraypool/dist/cjs/')));`]);
    check(`${nodeVersion}: require('arraypool') without require(esm): the CommonJS build`, cjsBuild.ok && cjsBuild.stdout === '7 true', cjsBuild.out);

    rmSync(join(dir, 'node_modules', PLATFORM), { recursive: true });
    const missing = sh(dir, env, 'node', ['--input-type=module', '-e',
      `try { await import('arraypool'); } catch (e) { console.log(e.code, e.message.includes('${PLATFORM} is not installed')); }`]);
    check(`${nodeVersion}: without ${PLATFORM}: ERR_NATIVE_ADDON_MISSING naming it`, missing.stdout === 'ERR_NATIVE_ADDON_MISSING true', missing.out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The installed types, from an ES module and from a CommonJS module. */
function checkTypes() {
  console.log('\n=== types: tsc (module nodenext) on an .mts and a .cts');
  const env = { ...process.env, PATH: strangerPath(process.execPath) };
  const dir = strangerDir();
  try {
    const install = sh(dir, env, 'npm', ['install', '--no-audit', '--no-fund', MAIN, ADDON]);
    check('types: npm install', install.ok, install.out);
    const use = `const pool: Pool = startPool();
const x = makeTransferable(Float64Array.of(1));
const n: number = x.array[0] ?? 0;
// @ts-expect-error layoutVersion takes no argument: fails if the types were not found (any)
layoutVersion(n);
console.log(pool.name, n);
`;
    writeFileSync(join(dir, 'esm.mts'), `import { layoutVersion, makeTransferable, startPool, type Pool } from 'arraypool';\n${use}`);
    writeFileSync(join(dir, 'cjs.cts'), `import { layoutVersion, makeTransferable, startPool, type Pool } from 'arraypool';\n${use}`);
    const tsconfig = {
      compilerOptions: {
        module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true,
        types: ['node'], typeRoots: [join(root, 'node_modules', '@types')],
      },
      files: ['esm.mts', 'cjs.cts'],
    };
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig));
    const tsc = sh(dir, env, process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.', '--traceResolution']);
    const resolved = (file) => new RegExp(`'arraypool' was successfully resolved to '[^']*${file}'`).test(tsc.out);
    check('types: tsc passes', tsc.ok, tsc.out.split('\n').filter((l) => l.includes('error')).join('\n'));
    check('types: import resolves dist/index.d.ts', resolved('node_modules/arraypool/dist/index.d.ts'));
    check('types: require resolves dist/cjs/index.d.ts', resolved('node_modules/arraypool/dist/cjs/index.d.ts'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const before = present();
checkTypes();
for (const line of lines) runLine(line);
const left = newSince(before, present(), String(process.pid));
check('no pool left behind in /dev/shm', left.length === 0, left.join('\n'));
const leftDirs = readdirSync(tmpdir()).filter((d) => d.startsWith('arraypool-stranger-'));
check('no stranger folder left in the temp dir', leftDirs.length === 0, leftDirs.join('\n'));

if (failures.length > 0) console.log(`\nfailed: ${failures.join('; ')}`);
console.log(`stranger: ${passed} passed, ${failures.length} failed`);
process.exit(failures.length === 0 ? 0 : 1);
