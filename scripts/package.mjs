#!/usr/bin/env node
/**
 * `npm run package`: the publishable tarballs, napi-rs's way. The main package
 * `arraypool` (platform-neutral: JS, types, the napi loader) and one package
 * per target, `arraypool-<platform>` with the addon, which the main one lists
 * as optionalDependencies (npm installs the one whose os/cpu/libc match).
 *
 *   npm run package                         # all four targets (package.json napi.targets)
 *   npm run package -- --host               # this machine's target only, plain cargo (from source)
 *   npm run package -- x86_64-unknown-linux-musl ...   # these targets
 *
 * Out: target/package/tarballs/*.tgz. Steps: `napi build --target T` per
 * target into target/package/artifacts with `--cross-compile` (glibc targets
 * as `<triple>.2.17`: the addon loads on glibc 2.17 and newer), i.e.
 * cargo-zigbuild and zig from PyPI, installed by this script into
 * ~/.cache/arraypool/zigbuild (`--use-napi-cross` would do for the glibc
 * targets, but the registry reachable here lacks the x86_64 toolchain of the
 * version @napi-rs/cli asks for; zig serves glibc and musl alike), then `napi
 * create-npm-dirs` and `napi artifacts` (target/package/npm/<platform>/), `napi
 * prepublish --dry-run` as the check that each package holds its addon, and
 * `npm pack` of each (the main package through package.json's prepack, see
 * scripts/publish-manifest.mjs). Missing Rust targets are added with rustup.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { platformOf } from './publish-manifest.mjs';
import { toolCache } from './tool-cache.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'target', 'package');
const artifacts = join(out, 'artifacts');
const npmDir = join(out, 'npm');
const tarballs = join(out, 'tarballs');
/** The oldest glibc the published -gnu addons load on. */
const GLIBC_FLOOR = '2.17';
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

function run(command, args, options = {}) {
  console.log(`+ ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit', ...options });
  if (result.status !== 0) {
    console.error(`FAIL: ${command} ${args.join(' ')} (${result.status ?? result.signal})`);
    process.exit(1);
  }
}

function hostTriple() {
  const host = /^host: (\S+)$/m.exec(execFileSync('rustc', ['-vV'], { encoding: 'utf8' }))?.[1];
  if (!host) throw new Error('rustc -vV names no host triple');
  return host;
}

function ensureRustTarget(triple) {
  const installed = execFileSync('rustup', ['target', 'list', '--installed'], { encoding: 'utf8' }).split('\n');
  if (!installed.includes(triple)) run('rustup', ['target', 'add', triple]);
}

/** cargo-zigbuild and zig (PyPI `ziglang`) in a venv of the tool cache; its bin dir. */
function ensureZigbuild() {
  const venv = join(toolCache(), 'zigbuild');
  const bin = join(venv, 'bin');
  if (!existsSync(join(bin, 'cargo-zigbuild'))) {
    run('python3', ['-m', 'venv', venv]);
    run(join(bin, 'pip'), ['install', '--quiet', 'cargo-zigbuild==0.24.0', 'ziglang==0.17.1']);
  }
  return bin;
}

function build(triple, hostOnly) {
  const args = ['napi', 'build', '--platform', '--release', '--strip', '--no-js'];
  args.push('--manifest-path', 'crates/node/Cargo.toml', '--package-json-path', 'package.json');
  args.push('--output-dir', artifacts, '--target', triple, '--target-dir', join(root, 'target', 'cross'));
  let env = process.env;
  if (!hostOnly) {
    // zig links against the glibc or musl of the target, not this machine's:
    // the published glibc builds do not need this machine's newer glibc.
    args.push('--cross-compile');
    env = { ...process.env, PATH: `${ensureZigbuild()}:${process.env.PATH}` };
    // cargo-zigbuild's glibc version suffix: link against glibc 2.17's symbols
    // (Rust's own floor), not zig's default (which made the addon need 2.30).
    if (triple.endsWith('-gnu')) args[args.indexOf('--target') + 1] = `${triple}.${GLIBC_FLOOR}`;
    ensureRustTarget(triple);
  }
  run('npx', args, { env });
}

const requested = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const hostOnly = process.argv.includes('--host');
const targets = hostOnly ? [hostTriple()] : requested.length > 0 ? requested : manifest.napi.targets;
for (const t of targets) {
  if (!manifest.napi.targets.includes(t)) throw new Error(`${t} is not in package.json napi.targets`);
}
for (const f of ['binding.cjs', 'binding.d.ts']) {
  if (!existsSync(join(root, f))) throw new Error(`${f} is missing: run \`npm install\` (or \`npm run build\`) first`);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(artifacts, { recursive: true });
mkdirSync(tarballs, { recursive: true });
for (const triple of targets) build(triple, hostOnly);
run('npm', ['run', 'build:ts']);

// napi's own steps: one folder per target (package.json with os/cpu/libc), addon copied in.
// They run on a copy of package.json in target/package, whose napi.targets
// are the ones built here (`napi artifacts` wants an addon for each): in the
// work tree `napi artifacts` would also drop every addon next to package.json,
// foreign-arch .node files beside the development build.
const napiManifest = { ...manifest, napi: { ...manifest.napi, targets } };
writeFileSync(join(out, 'package.json'), `${JSON.stringify(napiManifest, null, 2)}\n`);
run('npx', ['napi', 'create-npm-dirs', '--npm-dir', 'npm'], { cwd: out });
run('npx', ['napi', 'artifacts', '--output-dir', 'artifacts', '--npm-dir', 'npm'], { cwd: out });
run('npx', ['napi', 'prepublish', '--dry-run', '--skip-optional-publish', '--npm-dir', 'npm'], { cwd: out });

for (const triple of targets) {
  const dir = join(npmDir, platformOf(triple));
  copyFileSync(join(root, 'LICENSE'), join(dir, 'LICENSE'));
  run('npm', ['pack', '--pack-destination', tarballs], { cwd: dir });
}
run('npm', ['pack', '--pack-destination', tarballs]);

console.log('\n=== target/package/tarballs');
for (const name of readdirSync(tarballs).sort()) {
  console.log(`${name}  ${(statSync(join(tarballs, name)).size / 1024).toFixed(0)} KiB`);
}
for (const triple of targets) {
  const addon = join(npmDir, platformOf(triple), `${manifest.napi.binaryName}.${platformOf(triple)}.node`);
  console.log(`${platformOf(triple)}: ${execFileSync('file', ['-b', addon], { encoding: 'utf8' }).trim()}`);
}
