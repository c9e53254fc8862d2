// Handles, errors and lifetimes within one process.
import test from 'ava';
import { constants as bufferConstants } from 'node:buffer';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

import {
  ArrayPoolError,
  COMPACT_HANDLE_FORMAT,
  HANDLE_FIELDS,
  HANDLE_FORMAT,
  TransferableArray,
  empty,
  getPool,
  makeTransferable,
  parseSize,
  readHandle,
  revive,
  startPool,
  withPool,
  zeros,
} from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';
import { hooks } from './testing-addon.mjs';

const OWNER = fileURLToPath(new URL('./fixtures/owner.mjs', import.meta.url));

const pool = startPool({ size: '256M' });

test('the pool honours a size string', (t) => {
  t.is(pool.stats().capacityBytes, 256 * 2 ** 20);
  t.is(parseSize('4G'), 4 * 2 ** 30);
  t.is(parseSize('512M'), 512 * 2 ** 20);
  t.is(parseSize('1.5KiB'), 1536);
  t.is(parseSize(4096), 4096);
  for (const bad of ['', '12Q', '-1', 'G', 0, -5, 1.5, NaN]) {
    t.throws(() => parseSize(bad), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_ARG' }, String(bad));
  }
});

test('the only own enumerable property is the handle in the compact form; toHandle() gives the object form', (t) => {
  const a = makeTransferable(new Float32Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] });
  t.deepEqual(Object.keys(a), ['__arraypool__']);
  const json = JSON.parse(JSON.stringify(a));
  t.deepEqual(Object.keys(json), ['__arraypool__']);
  const h = a.toHandle();
  t.deepEqual(Object.keys(h), [...HANDLE_FIELDS]);
  t.is(h.__arraypool__, HANDLE_FORMAT);
  t.is(
    json.__arraypool__,
    `${COMPACT_HANDLE_FORMAT}:${h.segment}:${h.offset}:${h.generation}:0:24:float32:2,3`,
    'format:segment:offset:generation:byteOffset:byteLength:dtype:shape',
  );
  t.deepEqual(readHandle(json), h, 'both forms name the same array');
  t.deepEqual(readHandle(h), h);
  const cloned = structuredClone(a);
  t.deepEqual(cloned, json, 'structured clone carries the same handle');
  t.false('array' in cloned, 'never the bytes');
  t.true(JSON.stringify(a).length < 120);
  for (const spelled of [json, h]) {
    const back = revive(spelled);
    t.deepEqual([...back.array], [1, 2, 3, 4, 5, 6]);
    t.deepEqual(back.shape, [2, 3]);
    back.release();
  }
  t.throws(() => readHandle({ op: 'not a handle' }), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_HANDLE' });
  a.release();
});

test('revive walks objects, arrays, Maps and Sets at any depth, with cycles', (t) => {
  const a = makeTransferable(new Int16Array([1, 2, 3]));
  const msg = structuredClone({
    deep: { list: [1, { a }], map: new Map([['k', a]]), set: new Set([a]) },
  });
  msg.self = msg;
  const out = revive(msg);
  t.true(out.deep.list[1].a instanceof TransferableArray);
  t.true(out.deep.map.get('k') instanceof TransferableArray);
  t.true([...out.deep.set][0] instanceof TransferableArray);
  out.deep.list[1].a.array[0] = 77;
  t.is(a.array[0], 77);
  for (const r of [out.deep.list[1].a, out.deep.map.get('k'), [...out.deep.set][0], a]) r.release();
  t.is(revive(42), 42);
  t.is(revive(null), null);
});

test('release() detaches the view: length 0, never a dangling view', (t) => {
  const a = makeTransferable(new Float64Array(100).fill(3));
  const view = a.array;
  const alias = new Float64Array(view.buffer, 8, 10);
  a.release();
  t.true(a.released);
  t.is(view.length, 0);
  t.is(alias.length, 0);
  t.is(a.array.byteLength, 0);
  a.release(); // idempotent
  t.throws(() => a.subarray(0, 1), { code: 'ERR_NOT_HELD' });
});

test('Symbol.dispose releases', (t) => {
  const a = makeTransferable(new Uint8Array(8));
  a[Symbol.dispose]();
  t.is(a.array.length, 0);
});

test.serial('a view kept alone keeps the block; GC of the last view releases it', async (t) => {
  const before = pool.stats();
  let view = (() => makeTransferable(new Float64Array(1000).fill(5), { transferRequired: false }).array)();
  await collectGarbage();
  t.is(view[999], 5, 'the reference belongs to the ArrayBuffer, not the wrapper');
  t.is(pool.stats().liveBlocks, before.liveBlocks + 1);
  view = null;
  await collectGarbage();
  t.is(pool.stats().liveBlocks, before.liveBlocks);
  t.is(pool.stats().heldReferences, before.heldReferences);
});

test.serial('2000 large views of one block, dropped at once, are all released by GC', async (t) => {
  const before = pool.stats();
  const big = makeTransferable(new Uint8Array(64 * 2 ** 20), { transferRequired: false });
  const handle = big.toHandle();
  // 2000 x 64 MiB of views (their arrays read, so each has an ArrayBuffer), dropped at once.
  for (let i = 0; i < 2000; i++) void revive({ ...handle }).array;
  big.release();
  await collectGarbage();
  const after = pool.stats();
  t.is(after.heldReferences, before.heldReferences);
  t.is(after.liveBlocks, before.liveBlocks);
});

test('bad input is a typed error, never a crash', (t) => {
  t.throws(() => makeTransferable([1, 2, 3]), { instanceOf: ArrayPoolError, code: 'ERR_UNSUPPORTED_DTYPE' });
  t.throws(() => makeTransferable(new DataView(new ArrayBuffer(8))), { code: 'ERR_UNSUPPORTED_DTYPE' });
  t.throws(() => makeTransferable('abc'), { code: 'ERR_UNSUPPORTED_DTYPE' });
  t.throws(() => makeTransferable(new Float64Array(6), { shape: [4, 2] }), { code: 'ERR_INVALID_SHAPE' });
  t.throws(() => makeTransferable(new Float64Array(6), { shape: [-1, -6] }), { code: 'ERR_INVALID_SHAPE' });
  t.throws(() => empty('complex128', 4), { code: 'ERR_UNSUPPORTED_DTYPE' });
  // One view is limited to one Buffer's length on this Node: 4 GiB on 20;
  // from 22 on, 2^53 - 1, beyond any size a handle can carry.
  const bufferLimited = bufferConstants.MAX_LENGTH < 2 ** 43;
  t.throws(() => empty('float64', [2 ** 40]), { code: bufferLimited ? 'ERR_TOO_LARGE' : 'ERR_POOL_FULL' });
  t.throws(() => empty('float64', [2 ** 50]), { code: 'ERR_INVALID_ARG' }); // 2^53 bytes: no handle can say it
  t.throws(() => empty('uint8', [300 * 2 ** 20]), { code: 'ERR_POOL_FULL' });
});

test.serial('a full pool is ERR_POOL_FULL and keeps serving smaller requests', (t) => {
  const before = pool.stats();
  const error = t.throws(() => empty('uint8', before.largestFreeBytes + 1), { code: 'ERR_POOL_FULL' });
  t.regex(error.message, /requested \d+ bytes/);
  const small = zeros('float64', 16);
  t.deepEqual(Array.from(small.array), new Array(16).fill(0));
  small.release();
  t.is(pool.check().violation, null);
});

function randomHandle(rng, base) {
  const pick = (xs) => xs[Math.floor(rng() * xs.length)];
  const extremes = [0, -1, 1, 63, 64, 2 ** 53, 2 ** 53 - 1, 2 ** 64, -(2 ** 31), NaN, Infinity, -Infinity, 0.5, 1e300];
  const wrong = ['1', null, undefined, {}, [], true, 1n, Symbol.iterator.description];
  const number = () => {
    const r = rng();
    if (r < 0.4) return pick(extremes);
    if (r < 0.5) return pick(wrong);
    if (r < 0.8) return Math.floor(rng() * pool.stats().capacityBytes / 64) * 64;
    return Math.floor(rng() * 2 ** 32);
  };
  const h = { ...base };
  const fields = ['offset', 'generation', 'byteOffset', 'byteLength', 'segment', 'dtype', 'shape', '__arraypool__'];
  const n = 1 + Math.floor(rng() * 3);
  for (let i = 0; i < n; i++) {
    const f = pick(fields);
    if (f === 'segment') h.segment = pick([base.segment, '../../etc/passwd', '/arraypool-../x', 'arraypool-', '', 42, 'a'.repeat(300)]);
    else if (f === 'dtype') h.dtype = pick(['float64', 'uint8', 'nope', 7, null]);
    else if (f === 'shape') h.shape = pick([[1], [0], [-1], [1.5], 'x', [2 ** 40, 2 ** 40], [], null, [number()]]);
    else if (f === '__arraypool__') h.__arraypool__ = pick([1, 2, '1', true]);
    else h[f] = number();
  }
  return h;
}

/**
 * Revives 5000 forged handles (`forge(rng, live)`) next to a live block:
 * each is a typed ERR_INVALID_HANDLE or ERR_STALE_HANDLE, or names the live
 * block's own range; the pool stays consistent and the block untouched.
 */
function reviveForgeries(t, what, seed, forge) {
  const rng = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const live = makeTransferable(new Float64Array(64).fill(1));
  const handle = live.toHandle();
  const codes = new Map();
  let accepted = 0;
  for (let i = 0; i < 5000; i++) {
    const forged = forge(rng, live);
    try {
      const r = revive(forged);
      // Only a handle that still names the live block's own range may pass.
      t.true(r.offset === handle.offset && r.generation === handle.generation && r.byteOffset + r.byteLength <= 512, JSON.stringify(forged));
      r.release();
      accepted++;
    } catch (e) {
      t.true(e instanceof ArrayPoolError, String(e));
      codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
    }
  }
  t.deepEqual([...codes.keys()].sort(), ['ERR_INVALID_HANDLE', 'ERR_STALE_HANDLE']);
  t.log(`${what}: ${JSON.stringify(Object.fromEntries(codes))}, accepted ${accepted}`);
  t.is(pool.check().violation, null);
  t.is(live.array[63], 1, 'the live block is untouched');
  live.release();
}

test.serial('thousands of forged handles each give ERR_INVALID_HANDLE or ERR_STALE_HANDLE; check() still passes', (t) => {
  reviveForgeries(t, 'forged handles', 12345, (rng, live) => randomHandle(rng, live.toHandle()));
});

/** A compact-form handle with 1 to 3 of its fields (or its whole text) forged. */
function randomCompact(rng, base) {
  const pick = (xs) => xs[Math.floor(rng() * xs.length)];
  const numbers = ['0', '1', '64', '-1', '01', '00', '1e3', '0x40', ' 64', '64 ', '1.5', 'NaN', 'Infinity', '', '9007199254740991',
    '9007199254740992', '99999999999999999', String(2 ** 32), String(Math.floor(rng() * 2 ** 28) * 64)];
  const parts = base.split(':');
  const n = 1 + Math.floor(rng() * 3);
  for (let i = 0; i < n; i++) {
    const f = Math.floor(rng() * 10);
    if (f === 0) parts[0] = pick(['1', '3', '02', '', '2 ']);
    else if (f === 1) parts[1] = pick(['../../etc/passwd', '/arraypool-../x', 'arraypool-', '', 'a'.repeat(300), 'arraypool-x/y']);
    else if (f >= 2 && f <= 5) parts[f] = pick(numbers);
    else if (f === 6) parts[6] = pick(['float64', 'uint8', 'nope', 'Float64', '', 'float64 ']);
    else if (f === 7) parts[7] = pick(['1', '0', '8', '64', '8,8', '64,', ',64', '-1', '2,-0', Array(40).fill(1).join(','), '1099511627776,1099511627776']);
    else if (f === 8) parts.splice(Math.floor(rng() * parts.length), pick([0, 1]), pick(['', 'x', '7']));
    else return pick([base.slice(0, Math.floor(rng() * base.length)), `${base}:1`, `${base},`, base.replaceAll(':', ';'), 'x'.repeat(2000), `${base}${'0'.repeat(1100)}`]);
  }
  return parts.join(':');
}

test.serial('thousands of forged compact handles each give ERR_INVALID_HANDLE or ERR_STALE_HANDLE; check() still passes', (t) => {
  reviveForgeries(t, 'forged compact handles', 54321, (rng, live) => ({
    __arraypool__: randomCompact(rng, JSON.parse(JSON.stringify(live)).__arraypool__),
  }));
});

test('a compact handle is read strictly: one spelling per handle', (t) => {
  const a = makeTransferable(new Float64Array(8));
  const text = JSON.parse(JSON.stringify(a)).__arraypool__;
  const [, segment, offset, generation] = text.split(':');
  const spelled = (changes) => ({ __arraypool__: Object.assign(text.split(':'), changes).join(':') });
  for (const bad of [{ 2: `0${offset}` }, { 3: `+${generation}` }, { 4: '0.0' }, { 5: '6.4e1' }, { 7: '08' }, { 6: 'FLOAT64' }, { 0: '2.0' }]) {
    t.throws(() => revive(spelled(bad)), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_HANDLE' }, JSON.stringify(bad));
  }
  // The leading '/' of a shm name is the one other spelling, as in the object form.
  t.throws(() => revive(spelled({ 1: `/${segment}/` })), { code: 'ERR_INVALID_HANDLE' });
  t.throws(() => revive({ __arraypool__: 2 }), { code: 'ERR_INVALID_HANDLE' }, 'the number 2 is no format');
  const back = revive({ __arraypool__: text, extra: 'ignored' });
  t.is(back.byteLength, 64);
  t.is(JSON.parse(JSON.stringify(back)).__arraypool__, text, 'a revived array clones to the string it arrived as');
  back.release();
  a.release();
});

test('a handle naming another segment or dtype than the one before is checked in full', (t) => {
  // The parser reuses the segment and dtype of the last handle it read when
  // the next one spells exactly the same text; anything else is checked anew.
  const a = makeTransferable(new Float64Array(8));
  const text = JSON.parse(JSON.stringify(a)).__arraypool__;
  const fields = text.split(':');
  const spelled = (changes) => ({ __arraypool__: Object.assign([...fields], changes).join(':') });
  t.is(readHandle({ __arraypool__: text }).segment, fields[1]);
  for (const segment of [`${fields[1]}\u0001`, `${fields[1]}\u00e9`, `${fields[1].slice(0, -1)}\n`]) {
    t.throws(() => readHandle(spelled({ 1: segment })), { code: 'ERR_INVALID_HANDLE' }, JSON.stringify(segment));
    t.is(readHandle({ __arraypool__: text }).segment, fields[1], 'the good one still reads');
  }
  const sameLength = `${fields[1].slice(0, -1)}${fields[1].endsWith('0') ? '1' : '0'}`;
  t.throws(() => revive(spelled({ 1: sameLength })), { code: 'ERR_SEGMENT_NOT_FOUND' }, 'another name of the same length');
  for (const dtype of ['float6', 'float64x', 'float64 ']) {
    t.throws(() => readHandle(spelled({ 6: dtype })), { code: 'ERR_INVALID_HANDLE' }, JSON.stringify(dtype));
  }
  const asInt32 = readHandle(spelled({ 6: 'int32', 7: '16' }));
  t.is(asInt32.dtype, 'int32');
  t.deepEqual(asInt32.shape, [16]);
  t.is(readHandle({ __arraypool__: text }).dtype, 'float64', 'and back');
  a.release();
});

test.serial('withPool releases everything the scope took, sync and async', async (t) => {
  const before = pool.stats().heldReferences;
  const kept = withPool(() => {
    const a = makeTransferable(new Uint8Array(10), { transferRequired: false });
    a.subarray(0, 5);
    zeros('int32', 3);
    return a;
  });
  t.true(kept.released);
  t.is(pool.stats().heldReferences, before);
  await withPool(async () => {
    await new Promise((r) => setTimeout(r, 1));
    empty('uint8', 10, { transferRequired: false });
    t.is(pool.stats().heldReferences, before + 1);
  });
  t.is(pool.stats().heldReferences, before);
  t.throws(() => withPool(() => { makeTransferable(new Uint8Array(1)); throw new Error('boom'); }), { message: 'boom' });
  t.is(pool.stats().heldReferences, before);
});

test('copy() makes a new block; toArray() a private heap copy', (t) => {
  const a = makeTransferable(new Int32Array([1, 2, 3]), { shape: [3] });
  const b = a.copy({ transferRequired: false });
  const h = a.toArray();
  b.array[0] = 9;
  h[1] = 9;
  t.deepEqual(Array.from(a.array), [1, 2, 3]);
  t.not(b.offset, a.offset);
  t.true(h instanceof Int32Array);
  a.release();
  b.release();
});

test('makeTransferable copies exactly the source view, whatever its type and offset', (t) => {
  const backing = new ArrayBuffer(64);
  new Uint8Array(backing).forEach((_, i, u) => (u[i] = i));
  const sources = [
    new Float64Array(backing, 8, 3),
    new Int16Array(backing, 6, 5),
    new Uint8ClampedArray(backing, 3, 7),
    new BigInt64Array(backing, 16, 2),
    Buffer.from(backing, 5, 9),
  ];
  for (const source of sources) {
    const copy = makeTransferable(source, { transferRequired: false });
    t.is(copy.array.constructor, source.constructor);
    t.deepEqual(Array.from(copy.array), Array.from(source));
    copy.release();
  }
  // A pool view as the source (another block of the same pool).
  const first = makeTransferable(new Float32Array([1, 2, 3, 4]), { transferRequired: false });
  const second = makeTransferable(first.array.subarray(1, 3), { transferRequired: false });
  t.deepEqual(Array.from(second.array), [2, 3]);
  t.not(second.offset, first.offset);
  second.release();
  first.release();
});

test.serial('a released small array is kept in the process cache: counted apart, its old handle stale', (t) => {
  const a = makeTransferable(new Float64Array(100).fill(1), { transferRequired: false });
  const old = a.toHandle();
  const before = pool.stats();
  a.release();
  const cached = pool.stats();
  t.is(cached.usedBytes, before.usedBytes - 896, 'no longer used (100 doubles in an 896-byte block)');
  t.is(cached.cachedBytes, before.cachedBytes + 896);
  t.throws(() => revive(old), { instanceOf: ArrayPoolError, code: 'ERR_STALE_HANDLE' });
  // The next array of that size takes the block back, under a new generation.
  const b = makeTransferable(new Float64Array(100).fill(2), { transferRequired: false });
  t.is(b.offset, old.offset);
  t.not(b.toHandle().generation, old.generation);
  t.throws(() => revive(old), { instanceOf: ArrayPoolError, code: 'ERR_STALE_HANDLE' });
  t.is(pool.stats().cachedBytes, before.cachedBytes);
  b.release();
  t.is(pool.check().violation, null);
});

test.serial('an array whose view was never made is released by GC too', async (t) => {
  // Blocks by (offset, generation): a freed block may be cached under a new generation.
  const made = (() => {
    const local = makeTransferable(new Float64Array(64).fill(1), { transferRequired: false });
    const sent = makeTransferable(new Float64Array(64).fill(2));
    revive(sent.toHandle());
    return [local.toHandle(), sent.toHandle()].map((h) => `${h.offset}:${h.generation}`);
  })();
  const live = () => pool.blocks().blocks.filter((b) => made.includes(`${b.offset}:${b.generation}`)).length;
  t.is(live(), 2);
  for (let i = 0; i < 50 && live() > 0; i++) await collectGarbage();
  t.is(live(), 0, 'both blocks were freed once their arrays were collected');
  t.is(pool.check().violation, null);
});

test.serial('lazy arrays join the GC registry at the end of the task that made them: dropped ones are freed, released or read ones once, kept ones stay', async (t) => {
  // Registration waits for the microtask checkpoint (most arrays are
  // released or read before it); until then nothing of them may be lost.
  const key = (a) => `${a.offset}:${a.generation}`;
  const dtype = new Float64Array(128);
  const made = (() => {
    const dropped = makeTransferable(dtype, { transferRequired: false });
    const released = makeTransferable(dtype, { transferRequired: false });
    released.release();
    const read = makeTransferable(dtype, { transferRequired: false });
    t.is(read.array.length, 128);
    return { dropped: key(dropped), released: key(released), read: key(read) };
  })();
  const kept = makeTransferable(dtype, { transferRequired: false });
  const listed = () => new Set(pool.blocks().blocks.filter((b) => !b.cached).map((b) => `${b.offset}:${b.generation}`));
  t.true(listed().has(made.dropped) && listed().has(made.read) && listed().has(key(kept)));
  t.false(listed().has(made.released));
  await Promise.resolve(); // the checkpoint
  const before = pool.stats().heldReferences;
  for (let i = 0; i < 50 && (listed().has(made.dropped) || listed().has(made.read)); i++) await collectGarbage();
  t.false(listed().has(made.dropped), 'the dropped lazy array was released by GC');
  t.false(listed().has(made.read), 'the read one by its view');
  t.true(listed().has(key(kept)), 'the kept one is still held');
  t.is(pool.stats().heldReferences, before - 2);
  kept.release();
  t.is(pool.check().violation, null);
});

test.serial('a long synchronous stretch of make + release keeps no released array alive until it ends', (t) => {
  // Lazy arrays wait for the checkpoint to join the GC registry; the list
  // that holds them is flushed early when it grows, or 100 000 released
  // arrays (~230 bytes each) would stay on the heap until the task ended.
  const source = new Float64Array(16);
  globalThis.gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < 100_000; i++) makeTransferable(source, { transferRequired: false }).release();
  globalThis.gc();
  const grown = process.memoryUsage().heapUsed - before;
  t.true(grown < 8 * 2 ** 20, `the heap grew by ${grown} bytes`);
});

test('a view made late sees the data, and a released one is empty and detached', (t) => {
  const a = makeTransferable(Float64Array.of(1, 2, 3), { transferRequired: false });
  const b = revive(a.toHandle());
  t.deepEqual(Array.from(b.array), [1, 2, 3]);
  b.array[0] = 9;
  t.deepEqual(Array.from(a.array), [9, 2, 3]);
  t.deepEqual(Array.from(a.toArray()), [9, 2, 3]);
  b.release();
  const c = makeTransferable(Float64Array.of(4), { transferRequired: false });
  c.release();
  t.is(c.array.length, 0);
  t.throws(() => makeTransferable(c.array), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_ARG' });
  a.release();
});

test('zero-length arrays work', (t) => {
  const a = makeTransferable(new Float64Array(0));
  t.is(a.array.length, 0);
  const r = revive(a.toHandle());
  t.is(r.array.length, 0);
  r.release();
  a.release();
});

test('toTransferable finds the block behind a plain pool view, without copying', async (t) => {
  const { toTransferable } = await import('../dist/index.js');
  const y = empty('float64', 10, { transferRequired: false });
  y.array.fill(3);
  const slice = toTransferable(y.array.subarray(2, 5));
  t.is(slice.offset, y.offset);
  t.is(slice.byteOffset, 16);
  t.deepEqual(slice.shape, [3]);
  slice.array[0] = 8;
  t.is(y.array[2], 8, 'same memory');
  t.is(toTransferable(new Float64Array(3)), undefined, 'heap arrays are not pool views');
  slice.release();
  y.release();
  t.is(toTransferable(y.array), undefined, 'released views are not either');
});

test('revive attaches a handle object met twice only once', (t) => {
  const a = makeTransferable(new Uint8Array(4), { transferRequired: false });
  const before = pool.stats().heldReferences;
  const h = a.toHandle();
  const out = revive({ first: h, again: [h] });
  t.is(out.first, out.again[0]);
  t.is(pool.stats().heldReferences, before + 1);
  out.first.release();
  a.release();
});

test('toTransferable refuses a view at an offset its dtype cannot start at', async (t) => {
  const { toTransferable } = await import('../dist/index.js');
  const bytes = empty('uint8', 64, { transferRequired: false });
  const tail = bytes.subarray(1, 9); // its buffer starts at byte 1 of the block
  const floats = new Float32Array(tail.array.buffer, 0, 2); // aligned for JS, not in the block
  t.is(toTransferable(floats), undefined, 'a handle could not re-make it: copy instead');
  const asBytes = toTransferable(new Uint8Array(tail.array.buffer, 0, 8));
  t.is(asBytes?.byteOffset, 1, 'bytes may start anywhere');
  asBytes?.release();
  tail.release();
  bytes.release();
});

test.serial('revive that fails midway releases what it had attached', (t) => {
  const a = makeTransferable(new Uint8Array(4), { transferRequired: false });
  const before = pool.stats().heldReferences;
  const message = { good: a.toHandle(), bad: { ...a.toHandle(), generation: 2 ** 52 } };
  t.throws(() => revive(message), { code: 'ERR_INVALID_HANDLE' });
  t.is(pool.stats().heldReferences, before);
  a.release();
});

test.serial('the native reader of compact handles takes only what the JS reader accepts, with the same fields', async (t) => {
  // revive's fast path (binding.attachCompact) reads a compact handle of a
  // known pool in one call; anything else must be left to the JS reader
  // (false, nothing taken), so that both readers decide alike.
  const binding = (await import('../binding.cjs')).default;
  const dtypes = ['int8', 'uint8', 'uint8clamped', 'int16', 'uint16', 'int32', 'uint32', 'float32', 'float64', 'bigint64', 'biguint64', 'buffer'];
  const before = pool.stats();
  const live = makeTransferable(new Float64Array(64).fill(1));
  const base = JSON.parse(JSON.stringify(live)).__arraypool__;
  const out = new Float64Array(40);
  let seed = 2468;
  const rng = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const outcomes = { taken: 0, left: 0, thrown: 0 };
  for (let i = 0; i < 5000; i++) {
    const text = i === 0 ? base : randomCompact(rng, base);
    let js;
    try {
      js = readHandle({ __arraypool__: text });
    } catch (error) {
      js = error;
    }
    let taken;
    try {
      taken = binding.attachCompact(text, out);
    } catch (error) {
      outcomes.thrown++;
      t.false(js instanceof Error, `thrown only for a handle JS reads: ${text}`);
      t.is(js.segment, pool.name);
      t.regex(error.code, /^ERR_/);
      continue;
    }
    if (!taken) {
      outcomes.left++;
      t.true(js instanceof Error || js.segment !== pool.name, `left a handle of this pool that JS reads: ${text}`);
      continue;
    }
    outcomes.taken++;
    t.false(js instanceof Error, `taken, but JS refuses it: ${text}`);
    t.is(out[6], pool.id, 'the pool it names');
    const shape = Array.from(out.subarray(8, 8 + out[7]));
    t.deepEqual(
      { segment: pool.name, offset: out[1], generation: out[2], byteOffset: out[3], byteLength: out[4], dtype: dtypes[out[5]], shape },
      { segment: js.segment, offset: js.offset, generation: js.generation, byteOffset: js.byteOffset, byteLength: js.byteLength, dtype: js.dtype, shape: [...js.shape] },
      text,
    );
    binding.release(out[0], undefined);
  }
  t.log(`compact handles read natively: ${JSON.stringify(outcomes)}`);
  t.true(outcomes.taken > 0 && outcomes.left > 0);
  // Not strings, strings no handle has, a pool this process has not open: nothing taken.
  const foreign = [undefined, 42, {}, null, Symbol('x'), base.replace('float64', 'float٦4'), base.replace(':', '\uD800:'), `${base}${'0'.repeat(1100)}`,
    `${base}${'\u20ac'.repeat(400)}`, `${base}\0`, base.replace('float64', 'float64\0'), base.replace(pool.name, `${pool.name}x`)];
  // Strings of at most 1024 UTF-16 units whose UTF-8 form is longer than the
  // native copy buffer, sized so that the cut copy has exactly as many bytes
  // as the string has units (the length check alone cannot tell): € is 3
  // bytes, é 2, a surrogate pair (2 units) 4.
  const room = 1024 - base.length;
  foreign.push(
    base + '\u20ac'.repeat(3 * Math.floor(room / 3)),
    base + '\u00e9'.repeat(2 * Math.floor(room / 2)),
    base + '\u{1D11E}'.repeat(2 * Math.floor(room / 4)),
  );
  for (const text of foreign.slice(-3)) t.true(text.length <= 1024 && Buffer.byteLength(text) > 1024, 'a cut case');
  for (const text of foreign) t.false(binding.attachCompact(text, out), String(text?.toString?.()));
  t.throws(() => binding.attachCompact(base, new Float64Array(3)), { code: 'ERR_INVALID_ARG' }, 'out too short');
  live.release();
  t.is(pool.stats().usedBytes, before.usedBytes);
  t.is(pool.check().violation, null);
});

test.serial('revive reads compact handles natively for every pool the process has open, alternating between two', async (t) => {
  // Serial: the native count is the process's, and no other test of this
  // file runs meanwhile.
  const env = { ...process.env, TEST_BACKING: 'shm', ARRAYPOOL_SIZE: '4M' };
  delete env.ARRAYPOOL_SEGMENT;
  const owner = fork(OWNER, [], { env, serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const exited = once(owner, 'exit');
  try {
    const [hello] = await once(owner, 'message');
    const before = pool.stats();
    // The object form: read by JS, which opens the owner's pool here.
    const taken0 = hooks.testCompactAttaches();
    const theirs = revive(hello.handle);
    t.is(hooks.testCompactAttaches(), taken0, 'the object form is read by JS');
    const mine = makeTransferable(new Float64Array([7, 8]), { transferRequired: false });
    const texts = [mine, theirs].map((a) => JSON.parse(JSON.stringify(a)).__arraypool__);
    t.not(theirs.segment, pool.name);
    const taken1 = hooks.testCompactAttaches();
    for (let i = 0; i < 10; i++) {
      const r = revive({ x: { __arraypool__: texts[i % 2] } }).x;
      t.is(r.segment, i % 2 ? theirs.segment : pool.name);
      t.deepEqual([...r.array.subarray(0, 2)], i % 2 ? [1, 2] : [7, 8]);
      r.release();
    }
    t.is(hooks.testCompactAttaches() - taken1, 10, 'every compact handle took the native path');
    mine.release();
    theirs.release();
    theirs.pool.close();
    t.is(pool.stats().usedBytes, before.usedBytes);
    // Closed here: a handle of that pool is read the slow way again (and
    // opens it again), never natively through the closed pool.
    const again = revive({ __arraypool__: texts[1] });
    t.is(hooks.testCompactAttaches() - taken1, 10);
    t.deepEqual([...again.array], [1, 2, 3]);
    again.release();
    again.pool.close();
  } finally {
    owner.send('exit');
    await exited;
  }
});

test('revive gives every dtype and shape as the handle says, and a stale compact handle is ERR_STALE_HANDLE', (t) => {
  const dtypes = ['int8', 'uint8', 'uint8clamped', 'int16', 'uint16', 'int32', 'uint32', 'float32', 'float64', 'bigint64', 'biguint64', 'buffer'];
  for (const dtype of dtypes) {
    for (const shape of [[6], [2, 3], [0, 4], [1, 1, 1, 2]]) {
      const a = zeros(dtype, shape);
      const text = JSON.parse(JSON.stringify(a)).__arraypool__;
      // Twice: the first may take the slow path (a pool not seen before), the second takes the fast one.
      for (let i = 0; i < 2; i++) {
        const r = revive({ __arraypool__: text });
        t.is(r.dtype, dtype);
        t.deepEqual(r.shape, shape);
        t.true(Object.isFrozen(r.shape));
        t.is(r.array.constructor, a.array.constructor);
        t.is(r.array.length, a.array.length);
        t.is(JSON.parse(JSON.stringify(r)).__arraypool__, text);
        r.release();
      }
      a.release();
      t.throws(() => revive({ __arraypool__: text }), { code: 'ERR_STALE_HANDLE' }, `${dtype} ${shape}`);
    }
  }
});
