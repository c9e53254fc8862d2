// ProcessPool.map with real worker processes: chunks along the first axis,
// zero copy, results in order, progress, errors, abort, nothing left.
import test from 'ava';
import { fileURLToPath } from 'node:url';

import { ArrayPoolError, ProcessPool, makeTransferable, startPool } from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';

const TASKS = fileURLToPath(new URL('./fixtures/map-tasks.mjs', import.meta.url));
const pool = startPool({ size: '256M' });

async function settledUsed() {
  await collectGarbage();
  return pool.stats().usedBytes;
}

async function withPool(fn, workers = 3) {
  const pp = new ProcessPool({ module: TASKS, workers });
  try {
    return await fn(pp);
  } finally {
    await pp.close();
  }
}

test.serial('map splits along the first axis, runs each chunk as a task with no copy, gathers in order', async (t) => {
  const baseline = await settledUsed();
  const rows = 1000;
  const data = Float64Array.from({ length: rows * 4 }, (_, i) => i % 7);
  await withPool(async (pp) => {
    const progress = [];
    const results = await pp.map('sumChunk', data, { shape: [rows, 4], chunk: 64, onProgress: (p) => progress.push(p) });
    t.is(results.length, Math.ceil(rows / 64));
    results.forEach((r, i) => {
      t.is(r.index, i, 'in chunk order');
      t.is(r.start, i * 64);
      t.is(r.end, Math.min(rows, (i + 1) * 64));
      t.is(r.length, (r.end - r.start) * 4, 'a chunk is whole rows');
      t.true(r.inPool, 'the worker got a view of the pool, not a copy');
      let expected = 0;
      for (let j = r.start * 4; j < r.end * 4; j++) expected += data[j];
      t.is(r.sum, expected);
    });
    t.is(progress.length, results.length);
    t.deepEqual(progress.map((p) => p.done), results.map((_, i) => i + 1));
    t.true(progress.every((p) => p.total === results.length));
  });
  t.is(await settledUsed(), baseline, 'map released its copy and every chunk');
});

test.serial('map over a TransferableArray shares it: the workers write where the caller reads', async (t) => {
  const baseline = await settledUsed();
  const shared = makeTransferable(Float32Array.from({ length: 300 }, (_, i) => i), { transferRequired: false });
  await withPool(async (pp) => {
    const lengths = await pp.map('doubleInPlace', shared, { chunk: 100 });
    t.deepEqual(lengths, [100, 100, 100]);
  });
  t.is(shared.array[299], 598, 'doubled in place by a worker');
  t.is(shared.array[0], 0);
  shared.release();
  t.is(await settledUsed(), baseline);
});

test.serial('map: the first failing chunk rejects with its own error and stops the rest', async (t) => {
  const baseline = await settledUsed();
  await withPool(async (pp) => {
    const error = await t.throwsAsync(pp.map('failOnTwo', new Int32Array(50), { chunk: 10 }));
    t.regex(error.message, /chunk 2 refuses/);
  });
  t.is(await settledUsed(), baseline);
});

test.serial('map: an AbortSignal rejects with ERR_ABORTED and releases every chunk; the pool works afterwards', async (t) => {
  const baseline = await settledUsed();
  await withPool(async (pp) => {
    const controller = new AbortController();
    const running = pp.map('forever', new Float64Array(40), { chunk: 10, signal: controller.signal });
    setImmediate(() => controller.abort());
    const error = await t.throwsAsync(running, { instanceOf: ArrayPoolError });
    t.is(error.code, 'ERR_ABORTED');
    // The pool still works afterwards (killed workers are replaced).
    const results = await pp.map('sumChunk', new Float64Array([1, 2, 3, 4]), { chunk: 2 });
    t.deepEqual(results.map((r) => r.sum), [3, 7]);
  });
  t.is(await settledUsed(), baseline);
});

test.serial('map refuses a bad chunk size and an already aborted signal before allocating', async (t) => {
  const baseline = await settledUsed();
  await withPool(async (pp) => {
    for (const chunk of [0, -1, 1.5, NaN]) {
      const error = await t.throwsAsync(pp.map('sumChunk', new Float64Array(10), { chunk }), { instanceOf: ArrayPoolError });
      t.is(error.code, 'ERR_INVALID_ARG');
    }
    const error = await t.throwsAsync(pp.map('sumChunk', new Float64Array(10), { signal: AbortSignal.abort() }));
    t.is(error.code, 'ERR_ABORTED');
  }, 1);
  t.is(await settledUsed(), baseline);
});
