// Arrays crossing real process boundaries (fork, JSON and advanced IPC).
import test from 'ava';

import { makeTransferable, revive, startPool, getPool, empty, TransferableArray } from '../dist/index.js';
import { spawnChild, collectGarbage, DTYPE_SAMPLES } from './helpers.mjs';

const pool = startPool();

for (const serialization of ['json', 'advanced']) {
  test.serial(`parent -> child (${serialization}): the child's write is seen by the parent (zero copy)`, async (t) => {
    const c = await spawnChild({ serialization });
    try {
      const arr = makeTransferable(new Float64Array([1, 2, 3, 4, 5]));
      const answer = await c.request('write', { arr, index: 2, value: 99 });
      t.deepEqual(answer.seen, [1, 2, 99, 4]);
      t.is(arr.array[2], 99, 'the parent sees the child write in its own view');
      arr.array[0] = -1;
      const again = await c.request('readAndRelease', { arr });
      t.is(again.sum, -1 + 2 + 99 + 4 + 5, 'and the child sees the parent write');
      arr.release();
    } finally {
      await c.stop();
    }
  });
}

test.serial('child -> parent: a result survives the child dropping it, collecting garbage and exiting', async (t) => {
  const c = await spawnChild();
  const result = c.message('result');
  const done = c.request('result', { length: 1000 });
  const { r } = await result;
  const { stats } = await done;
  t.is(stats.heldReferences, 0, 'the child dropped its reference (GC ran its finalizer)');
  t.true(stats.inFlightBlocks >= 1, 'the block waits in flight');
  await c.request('exit', { code: 0 });
  const [code] = await c.exited;
  t.is(code, 0);
  t.false(r instanceof TransferableArray, 'a plain handle arrived');
  const live = revive(r);
  t.is(live.array.length, 1000);
  t.is(live.array[999], 1998);
  live.release();
  t.is(getPool().stats().liveBlocks, 0, 'transferred and released: freed');
});

test.serial('transferRequired: false frees at the last reference', async (t) => {
  const before = getPool().stats();
  const a = makeTransferable(new Int32Array(1000), { transferRequired: false });
  t.is(getPool().stats().liveBlocks, before.liveBlocks + 1);
  a.release();
  const after = getPool().stats();
  t.is(after.liveBlocks, before.liveBlocks);
  t.is(after.usedBytes, before.usedBytes);
  t.is(after.inFlightBlocks, before.inFlightBlocks);
});

test.serial('transferRequired: true waits for a receiver before freeing', async (t) => {
  const a = makeTransferable(new Int32Array(10));
  // The handle is taken before the release: a block whose handle never left
  // the process is freed by its last release (issue 12).
  const handle = a.toHandle();
  a.release();
  t.is(getPool().stats().inFlightBlocks, 1, 'kept in flight');
  const c = await spawnChild();
  try {
    const got = await c.request('readAndRelease', { arr: handle });
    t.is(got.sum, 0);
    t.is(getPool().stats().inFlightBlocks, 0);
    t.is(getPool().stats().liveBlocks, 0, 'freed once taken over and dropped');
  } finally {
    await c.stop();
  }
});

test.serial('a block sent to a second child after the first released it is ERR_STALE_HANDLE, never wrong data', async (t) => {
  const first = await spawnChild();
  const second = await spawnChild();
  try {
    const a = makeTransferable(new Float64Array([7, 7, 7]));
    const handle = a.toHandle();
    a.release(); // the parent lets go; the block is in flight
    const got = await first.request('readAndRelease', { arr: handle });
    t.is(got.sum, 21);
    // The first child freed it into its small-block cache: once it is gone
    // (its cache drained at close, or reaped), the memory is free for reuse.
    await first.stop();
    getPool().reap();
    // The memory is reused by a new array right away.
    const reuse = makeTransferable(new Float64Array([5, 5, 5]), { transferRequired: false });
    t.is(reuse.offset, handle.offset, 'same place, new generation');
    const stale = await second.request('tryRevive', { arr: handle });
    t.deepEqual(stale, { ok: false, code: 'ERR_STALE_HANDLE' });
    reuse.release();
  } finally {
    await first.stop();
    await second.stop();
  }
});

test.serial('subarray across processes: the child writes through a slice into the parent array', async (t) => {
  const c = await spawnChild();
  try {
    const a = makeTransferable(Float64Array.from({ length: 12 }, (_, i) => i), { shape: [4, 3] });
    const rows = a.subarray(1, 3);
    t.deepEqual(rows.shape, [2, 3]);
    t.is(rows.byteOffset, 3 * 8);
    t.deepEqual(Array.from(rows.array), [3, 4, 5, 6, 7, 8]);
    await c.request('write', { arr: rows, index: 0, value: 100 });
    t.is(a.array[3], 100, 'the slice shares the block');
    const last = a.subarray(-1);
    t.deepEqual(Array.from(last.array), [9, 10, 11], 'negative indices count from the end');
    for (const v of [a, rows, last]) v.release();
  } finally {
    await c.stop();
  }
});

const DTYPES = DTYPE_SAMPLES;

test.serial('every dtype and a multi-dimensional shape cross a process and come back', async (t) => {
  const c = await spawnChild();
  try {
    for (const [Ctor, sample] of DTYPES) {
      const source = Ctor === Buffer ? Buffer.alloc(24, sample) : new Ctor(24).fill(sample);
      const a = makeTransferable(source, { shape: [2, 3, 4] });
      t.is(a.array.constructor, Ctor === Buffer ? Buffer : Ctor, `${Ctor.name} view`);
      t.deepEqual(a.shape, [2, 3, 4]);
      const answer = await c.request('addOne', { x: a });
      t.is(answer.error, undefined, `${Ctor.name}: ${answer.error}`);
      const result = revive(answer.y);
      t.is(result.dtype, a.dtype);
      t.deepEqual(result.shape, [2, 3, 4]);
      const one = typeof sample === 'bigint' ? 1n : 1;
      const expected = source.map((v) => v + one);
      t.deepEqual(Array.from(result.array), Array.from(expected), `${Ctor.name} values`);
      a.release();
      result.release();
    }
  } finally {
    await c.stop();
  }
  // The child held its results until SIGTERM ended it (no listener: it died
  // at once, without releasing); its references go when it is reaped.
  getPool().reap();
  const stats = getPool().stats();
  t.is(stats.liveBlocks, 0, JSON.stringify(stats));
});

test.serial('one array of 256 MiB crosses to a child and back without a copy of its bytes in IPC', async (t) => {
  const c = await spawnChild();
  try {
    const n = (256 * 2 ** 20) / 8;
    const x = empty('float64', n);
    x.array.fill(1);
    x.array[n - 1] = 41;
    const { y } = await c.request('addOne', { x });
    const out = revive(y);
    t.is(out.byteLength, 256 * 2 ** 20);
    t.is(out.array[0], 2);
    t.is(out.array[n - 1], 42);
    x.release();
    out.release();
  } finally {
    await c.stop();
  }
  t.is(getPool().check().violation, null);
});

test.serial('a child forked after the pool was created attaches to it (ARRAYPOOL_SEGMENT)', async (t) => {
  const c = await spawnChild();
  try {
    const { stats, segment } = await c.request('stats');
    t.is(segment.split('@')[0], pool.name);
    t.true(segment.startsWith(`${pool.name}@${c.child.pid}:`), `the child names itself first: ${segment}`);
    t.true(segment.includes(`,${process.pid}:`), 'then its parent');
    t.is(stats.processes, 2);
  } finally {
    await c.stop();
  }
  await collectGarbage();
  t.is(getPool().stats().processes, 1, 'a stopped child leaves the pool');
});
