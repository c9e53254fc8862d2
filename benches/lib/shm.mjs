/**
 * /dev/shm bookkeeping: names for the shm-typed-array competitor's
 * segments, their resident size, and the sweep that proves the bench left
 * nothing behind.
 *
 * Other processes on the machine (tests, other benches) may own
 * `arraypool-*` segments at the same time, so the bench only ever looks at
 * names it made: its pools (whose names it records) and shm-typed-array
 * segments carrying this run's id.
 */
import { readdirSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadShmTypedArray } from './shm-addon.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Identifies one bench run in segment names; children inherit it. */
export const RUN_ENV = 'ARRAYPOOL_BENCH_RUN';
const runId = (process.env[RUN_ENV] ??= String(process.pid));

/** Prefix (in /dev/shm) of every shm-typed-array segment this run creates. */
export const SHM_PREFIX = `apbench-${runId}-`;

let counter = 0;
/** A fresh POSIX name for one shm-typed-array segment ('/' + name in /dev/shm). */
export function shmName(tag) {
  return `/${SHM_PREFIX}${process.pid}-${tag}-${counter++}`;
}

let shmModule;
/**
 * The shm-typed-array module (a CommonJS native addon) built for the running
 * Node, or an error that gives the whole reason and the command that builds it.
 */
export function shmTypedArray() {
  if (shmModule) return shmModule;
  const { module, error } = loadShmTypedArray(ROOT);
  if (!module) {
    throw new Error(
      `shm-typed-array is not usable on Node ${process.version}: ${error}. ` +
        `Build it for this Node with: ${process.execPath} benches/build-shm-typed-array.mjs`,
    );
  }
  shmModule = module;
  return shmModule;
}

/** Set once the note was printed: forked bench workers inherit it and stay quiet. */
const NOTED_ENV = 'ARRAYPOOL_BENCH_SHM_NOTED';

/**
 * `competitors` without shm-typed-array when its addon does not load on this
 * Node; says so once per run, in one line with the whole reason.
 */
export function runnable(competitors) {
  try {
    shmTypedArray();
    return competitors;
  } catch (error) {
    if (!process.env[NOTED_ENV]) process.stderr.write(`[bench] shm-typed-array rows skipped: ${error.message}\n`);
    process.env[NOTED_ENV] = '1';
    return competitors.filter((c) => c.id !== 'shm-typed-array');
  }
}

/**
 * Bytes of memory a pool or a /dev/shm file holds (shmem pages actually
 * allocated), 0 if gone. An anonymous pool is given by its locator
 * (`name@pid:fd,...`) and measured through its first member's fd.
 */
export function residentBytes(nameOrLocator) {
  const member = /^arraypool-memfd-[0-9a-f]+@(\d+):(\d+)/.exec(nameOrLocator);
  const path = member ? `/proc/${member[1]}/fd/${member[2]}` : `/dev/shm/${nameOrLocator.replace(/^\//, '')}`;
  try {
    return statSync(path).blocks * 512;
  } catch {
    return 0;
  }
}

/** Names in /dev/shm that this run's shm-typed-array competitor made. */
export function shmSegmentsOfThisRun() {
  return readdirSync('/dev/shm').filter((name) => name.startsWith(SHM_PREFIX));
}

/**
 * Removes what the run left in /dev/shm among `poolNames` and this run's
 * shm-typed-array names, and returns the names found (none is the goal).
 */
export function sweepLeftovers(poolNames) {
  const present = new Set(readdirSync('/dev/shm'));
  const left = [...new Set(poolNames)].filter((name) => present.has(name)).concat(shmSegmentsOfThisRun());
  for (const name of left) {
    try {
      unlinkSync(`/dev/shm/${name}`);
    } catch {
      // Already gone.
    }
  }
  return left;
}
