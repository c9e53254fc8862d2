/**
 * Scenario 3, small arrays: the cost of making one shareable array of
 * 64 B, 1 KiB or 64 KiB (filled from a source) and giving it back.
 *
 * - arraypool: `makeTransferable(source, { transferRequired: false })` +
 *   `release()`. transferRequired false is the local lifetime (freed at the
 *   last release); with the default a block released before any other
 *   process revived it stays reserved for that process, so a make+release
 *   loop would fill the pool.
 * - shm-typed-array: `createPosix` + `set` + `destroy` (shm_open, ftruncate,
 *   mmap, then munmap, shm_unlink): one segment per array.
 * - `new Float64Array(source)`: the heap floor (not shareable), the reference.
 *
 * Each size is measured in a fresh forked process. shm-typed-array keeps a
 * record of every segment it ever made in a vector it never shrinks and
 * scans linearly on each create and destroy, so its per-array cost grows with
 * the number of arrays the process made before; a fresh process with a few
 * thousand operations measures its best case (its syscall cost).
 */
import { makeTransferable } from '../../dist/index.js';
import { BenchChild } from '../lib/children.mjs';
import { microsPerOp, roundRobin } from '../lib/measure.mjs';
import { scenarioResult } from '../lib/results.mjs';
import { runnable, shmName, shmTypedArray } from '../lib/shm.mjs';

const COMPETITORS = [
  { id: 'heap', label: 'new Float64Array(source) (heap, not shareable)', reference: true },
  { id: 'arraypool', label: 'arraypool makeTransferable + release' },
  { id: 'shm-typed-array', label: 'shm-typed-array createPosix + set + destroy' },
];

const sizeLabel = (bytes) => (bytes >= 1024 ? `${bytes / 1024} KiB` : `${bytes} B`);

/**
 * Runs in the forked process: µs per make+release of each competitor for
 * one size, per round. `ops` is the number of operations per round and
 * competitor (shm-typed-array's is lower: it is ~100x slower per op).
 */
export async function measureSmallArrays({ bytes, rounds, warmup, ops, shmOps }) {
  const source = new Float64Array(bytes / 8).map((_, i) => i);
  // Keeps the heap arrays observable, so the JIT cannot drop the allocation.
  const sink = new Array(64);
  const loops = {
    heap: () =>
      microsPerOp(ops, (i) => {
        sink[i & 63] = new Float64Array(source);
      }),
    arraypool: () =>
      microsPerOp(ops, () => {
        makeTransferable(source, { transferRequired: false }).release();
      }),
    'shm-typed-array': () =>
      microsPerOp(shmOps, () => {
        const name = shmName('small');
        shmTypedArray().createPosix(name, source.length, 'Float64Array').set(source);
        shmTypedArray().destroy(name);
      }),
  };
  const samples = await roundRobin(
    runnable(COMPETITORS).map((c) => ({ id: c.id, round: loops[c.id] })),
    { rounds, warmup },
  );
  return Object.fromEntries(samples);
}

/** Scenario 3 in the runner: one fresh worker per size. */
export async function run({ sizes, rounds, warmup, ops, shmOps }) {
  const results = [];
  for (const bytes of sizes) {
    const worker = new BenchChild('worker');
    try {
      await worker.ready();
      const { samples } = await worker.request({ op: 'small-arrays', bytes, rounds, warmup, ops, shmOps });
      results.push(
        scenarioResult(
          {
            id: `small-${bytes}`,
            title: `3. make a shareable ${sizeLabel(bytes)} array and give it back`,
            unit: 'µs',
            note: 'µs per make+release (fresh process per size); reference: a heap copy',
          },
          runnable(COMPETITORS).map((c) => ({ ...c, samples: samples[c.id] })),
        ),
      );
    } finally {
      await worker.stop();
    }
  }
  return results;
}
