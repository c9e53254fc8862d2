/**
 * Scenario 2, copy-in bandwidth: putting an existing 160 MB array into
 * shared memory.
 *
 * - `TypedArray.prototype.set` between two warm heap buffers: the memcpy
 *   limit, the reference.
 * - arraypool `makeTransferable` into a warm pool: the pool reuses blocks
 *   whose pages are already resident (blocks under the punch threshold keep
 *   their pages when freed), so this should run at memcpy speed.
 * - shm-typed-array: a fresh segment per array (createPosix + set); every
 *   page is faulted in on first write.
 *
 * Only the copy (and for the others the allocation) is timed; the release or
 * destroy follows outside the clock.
 */
import { makeTransferable } from '../../dist/index.js';
import { roundRobin } from '../lib/measure.mjs';
import { scenarioResult } from '../lib/results.mjs';
import { runnable, shmName, shmTypedArray } from '../lib/shm.mjs';

export async function run({ length, rounds, warmup }) {
  const source = new Float64Array(length).map((_, i) => i);
  const heapTarget = new Float64Array(length).fill(1); // touched: warm
  const timed = (fn) => {
    const t0 = performance.now();
    const result = fn();
    return [performance.now() - t0, result];
  };
  const competitors = runnable([
    {
      id: 'memcpy',
      label: 'TypedArray.prototype.set, warm heap to warm heap (memcpy)',
      reference: true,
      round: () => timed(() => heapTarget.set(source))[0],
    },
    {
      id: 'arraypool',
      label: 'arraypool makeTransferable into a warm pool',
      round: () => {
        const [ms, t] = timed(() => makeTransferable(source, { transferRequired: false }));
        if (t.array[length - 1] !== length - 1) throw new Error('makeTransferable: wrong copy');
        t.release();
        return ms;
      },
    },
    {
      id: 'shm-typed-array',
      label: 'shm-typed-array fresh segment (createPosix + set)',
      round: () => {
        const name = shmName('copy');
        const [ms, x] = timed(() => {
          const segment = shmTypedArray().createPosix(name, length, 'Float64Array');
          segment.set(source);
          return segment;
        });
        if (x[length - 1] !== length - 1) throw new Error('shm-typed-array: wrong copy');
        shmTypedArray().destroy(name);
        return ms;
      },
    },
  ]);
  const samples = await roundRobin(competitors, { rounds, warmup });
  return scenarioResult(
    {
      id: 'copy-in',
      title: `2. copy ${(length * 8) / 1e6} MB into shared memory`,
      unit: 'ms',
      note: 'time per copy; reference: memcpy between warm heap buffers',
    },
    competitors.map((c) => ({ ...c, samples: samples.get(c.id) })),
  );
}
