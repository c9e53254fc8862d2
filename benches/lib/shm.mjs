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
import { createRequire } from 'node:module';

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
/** The shm-typed-array module (a CommonJS native addon), or a clear error. */
export function shmTypedArray() {
  if (shmModule) return shmModule;
  try {
    shmModule = createRequire(import.meta.url)('shm-typed-array');
  } catch (error) {
    throw new Error(
      `shm-typed-array is not usable (${error.message.split('\n')[0]}); its addon is built by ` +
        '`npm install` (postinstall: node benches/build-shm-typed-array.mjs)',
    );
  }
  return shmModule;
}

/** Bytes of memory a /dev/shm file holds (tmpfs pages actually allocated), 0 if gone. */
export function residentBytes(name) {
  try {
    return statSync(`/dev/shm/${name.replace(/^\//, '')}`).blocks * 512;
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
