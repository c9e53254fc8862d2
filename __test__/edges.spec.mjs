// Edge cases of issue 11 ("trust nothing"): messages revive without being
// written to or running their code, arrays that cannot be copied fail
// before a block is allocated, subarray coerces as TypedArray does, shapes
// cannot overflow, a pool has one name, and handles are read as plain data.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import {
  ArrayPoolError,
  TransferableArray,
  empty,
  makeTransferable,
  readHandle,
  revive,
  startPool,
  toTransferable,
  zeros,
} from '../dist/index.js';

const pool = startPool({ size: '64M' });
test.after.always(() => pool.close());

const fixture = (name) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const repoFile = (name) => readFileSync(new URL(`../${name}`, import.meta.url), 'utf8');

/** What an allocation would change. */
const footprint = () => {
  const { usedBytes, liveBlocks, inFlightBlocks, heldReferences } = pool.stats();
  return { usedBytes, liveBlocks, inFlightBlocks, heldReferences };
};

/** Runs `fn` and checks it left the pool as it was (nothing allocated, nothing held). */
function leavesPoolAlone(t, fn) {
  const before = footprint();
  const result = fn();
  t.deepEqual(footprint(), before, 'nothing allocated, nothing held');
  return result;
}

const detachedFloat64 = () => {
  const buffer = new ArrayBuffer(32);
  const view = new Float64Array(buffer);
  structuredClone(buffer, { transfer: [buffer] }); // detaches it (Node 20 has no ArrayBuffer.prototype.transfer)
  return view;
};

// 1. revive leaves alone what it need not touch.

test('revive returns a frozen message without handles as it is', (t) => {
  const message = Object.freeze({
    n: 1,
    list: Object.freeze([1, Object.freeze({ deep: 'x' })]),
    map: new Map([['k', Object.freeze({ v: 2 })]]),
    set: new Set([Object.freeze([3])]),
  });
  t.is(revive(message), message);
  t.true(Object.isFrozen(message) && Object.isFrozen(message.list));
  t.deepEqual([...message.map.keys()], ['k']);
  t.is(revive(Object.freeze([Object.freeze({})])).length, 1);
});

test('revive never runs a getter or setter of the message', (t) => {
  let runs = 0;
  const withGetters = {
    plain: { n: 1 },
    get computed() {
      runs++;
      return { n: 2 };
    },
    get both() {
      runs++;
      return 1;
    },
    set both(v) {
      runs += 100;
    },
  };
  const message = { outer: withGetters, list: [withGetters] };
  t.is(revive(message), message);
  t.is(revive(withGetters), withGetters);
  t.is(runs, 0, 'no accessor ran');
  t.deepEqual(Object.keys(withGetters), ['plain', 'computed', 'both']);
});

test.serial('a handle in a frozen container is ERR_INVALID_ARG; one in a mutable object inside it revives', (t) => {
  const a = makeTransferable(new Float64Array([1, 2]), { transferRequired: false });
  const held = pool.stats().heldReferences;
  const error = t.throws(() => revive(Object.freeze({ ok: 1, x: a.toHandle() })), {
    instanceOf: ArrayPoolError,
    code: 'ERR_INVALID_ARG',
  });
  t.regex(error.message, /read-only/);
  t.throws(() => revive(Object.freeze([a.toHandle()])), { code: 'ERR_INVALID_ARG' });
  t.is(pool.stats().heldReferences, held, 'what was attached was released');
  const inner = { x: a.toHandle() };
  const out = revive(Object.freeze({ inner }));
  t.true(inner.x instanceof TransferableArray, 'the mutable object was updated in place');
  t.is(out.inner.x.array[1], 2);
  inner.x.release();
  a.release();
});

// 2. Arrays that cannot be copied fail before a block is allocated.

test.serial('makeTransferable of a detached view is ERR_INVALID_ARG, before allocating', (t) => {
  const view = detachedFloat64();
  t.is(view.length, 0);
  const error = leavesPoolAlone(t, () =>
    t.throws(() => makeTransferable(view), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_ARG' }),
  );
  t.regex(error.message, /detached/);
  const bytes = new Uint8Array(new ArrayBuffer(8), 2, 4);
  structuredClone(bytes.buffer, { transfer: [bytes.buffer] });
  leavesPoolAlone(t, () => t.throws(() => makeTransferable(bytes, { transferRequired: false }), { code: 'ERR_INVALID_ARG' }));
  // release() detaches a pool view: copying it again is the same mistake.
  const released = makeTransferable(new Float64Array([1]), { transferRequired: false });
  released.release();
  leavesPoolAlone(t, () => t.throws(() => makeTransferable(released.array), { code: 'ERR_INVALID_ARG' }));
  leavesPoolAlone(t, () => t.throws(() => released.copy(), { code: 'ERR_NOT_HELD' }));
});

test.serial('makeTransferable of a view over a resizable ArrayBuffer is ERR_INVALID_ARG, before allocating', (t) => {
  const buffer = new ArrayBuffer(32, { maxByteLength: 64 });
  for (const view of [new Float64Array(buffer), new Float64Array(buffer, 8, 2), new Uint8Array(buffer, 0, 0)]) {
    const error = leavesPoolAlone(t, () =>
      t.throws(() => makeTransferable(view), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_ARG' }),
    );
    t.regex(error.message, /resizable/);
  }
  // A fixed-length copy goes through.
  const copy = makeTransferable(new Float64Array(buffer).fill(4).slice(), { transferRequired: false });
  t.deepEqual(Array.from(copy.array), [4, 4, 4, 4]);
  copy.release();
});

test.serial('makeTransferable of a view over a growable SharedArrayBuffer is ERR_INVALID_ARG, before allocating', (t) => {
  const growable = new SharedArrayBuffer(32, { maxByteLength: 64 });
  for (const view of [new Int32Array(growable), new Int32Array(growable, 4, 2)]) {
    const error = leavesPoolAlone(t, () =>
      t.throws(() => makeTransferable(view), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_ARG' }),
    );
    t.regex(error.message, /growable/);
  }
  // A fixed-length SharedArrayBuffer is fine.
  const fixed = makeTransferable(new Int32Array(new SharedArrayBuffer(8)).fill(9), { transferRequired: false });
  t.deepEqual(Array.from(fixed.array), [9, 9]);
  fixed.release();
});

// 3. subarray reads its arguments as TypedArray.prototype.subarray does.

test('subarray coerces begin and end as TypedArray.prototype.subarray (NaN is 0)', (t) => {
  const data = Float64Array.from({ length: 6 }, (_, i) => i + 1);
  const a = makeTransferable(data, { transferRequired: false });
  const cases = [
    [NaN],
    [NaN, NaN],
    [0, NaN],
    [NaN, 3],
    [],
    [undefined, 2],
    [-0],
    [1.9, 4.9],
    [-1.5],
    [-2],
    [-100, 100],
    [Infinity],
    [-Infinity, -Infinity],
    [-Infinity, Infinity],
    ['2', '4'],
    [null, null],
    [true],
    [{ valueOf: () => 3 }],
    [4, 2],
    ['x'],
  ];
  for (const args of cases) {
    const expected = data.subarray(...args);
    const s = a.subarray(...args);
    const label = `subarray(${args.map(String).join(', ')})`;
    t.deepEqual(s.shape, [expected.length], label);
    t.deepEqual(Array.from(s.array), Array.from(expected), label);
    t.is(s.byteOffset, expected.byteOffset, label);
    s.release();
  }
  for (const bad of [1n, Symbol('x')]) {
    t.throws(() => data.subarray(bad), { instanceOf: TypeError }, 'TypedArray refuses it');
    t.throws(() => a.subarray(bad), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_ARG' });
  }
  a.release();
});

test('subarray(NaN) of a 2-D array is the whole array', (t) => {
  const a = makeTransferable(new Int16Array([1, 2, 3, 4, 5, 6]), { shape: [3, 2], transferRequired: false });
  const s = a.subarray(NaN);
  t.deepEqual(s.shape, [3, 2]);
  t.deepEqual(Array.from(s.array), [1, 2, 3, 4, 5, 6]);
  const tail = a.subarray(NaN, -1);
  t.deepEqual(tail.shape, [2, 2]);
  for (const x of [s, tail, a]) x.release();
});

// 4. Shapes whose element count cannot be represented.

const OVERFLOWING = [
  [2 ** 53 - 1, 2 ** 53 - 1, 0], // the product rounds to a huge float; times 0 it used to pass as 0
  [0, 2 ** 30, 2 ** 30, 2 ** 30],
  [2 ** 27, 2 ** 27, 0],
  [2 ** 26, 2 ** 26, 2 ** 2],
  [3, 2 ** 52],
];

test.serial('a shape whose element count passes MAX_SAFE_INTEGER is ERR_INVALID_SHAPE wherever a shape is accepted', (t) => {
  for (const shape of OVERFLOWING) {
    const label = JSON.stringify(shape);
    leavesPoolAlone(t, () => {
      t.throws(() => makeTransferable(new Float64Array(0), { shape }), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_SHAPE' }, label);
      t.throws(() => empty('uint8', shape), { code: 'ERR_INVALID_SHAPE' }, label);
      t.throws(() => zeros('float64', shape, { transferRequired: false }), { code: 'ERR_INVALID_SHAPE' }, label);
    });
  }
  // Zero elements in a representable shape are fine.
  const none = makeTransferable(new Float64Array(0), { shape: [2 ** 26, 0, 3], transferRequired: false });
  t.deepEqual(none.shape, [2 ** 26, 0, 3]);
  none.release();
});

test.serial('a forged handle with an overflowing shape is ERR_INVALID_HANDLE, its cause ERR_INVALID_SHAPE', (t) => {
  const a = makeTransferable(new Float64Array(0), { transferRequired: false });
  for (const shape of OVERFLOWING) {
    const error = leavesPoolAlone(t, () =>
      t.throws(() => revive({ ...a.toHandle(), shape }), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_HANDLE' }, JSON.stringify(shape)),
    );
    t.is(error.cause?.code, 'ERR_INVALID_SHAPE');
    t.regex(error.message, /MAX_SAFE_INTEGER/);
  }
  a.release();
});

test('a shape is read once, by index: an iterator that changes its answer cannot reshape the array', (t) => {
  const lying = (first, later) => {
    const shape = [...first];
    let calls = 0;
    shape[Symbol.iterator] = function* () {
      yield* calls++ === 0 ? first : later;
    };
    return shape;
  };
  const a = makeTransferable(new Float64Array([1, 2, 3, 4]), { shape: lying([2, 2], [2 ** 40]), transferRequired: false });
  t.deepEqual(a.shape, [2, 2]);
  t.is(a.byteLength, 32);
  const r = revive({ ...a.toHandle(), shape: lying([4], [2 ** 40]) });
  t.deepEqual(r.shape, [4], 'the handle keeps the shape that was checked');
  t.deepEqual(r.subarray(1, 3).shape, [2]);
  r.release();
  a.release();
});

// 5. One pool, however its name is spelled.

test('a handle naming this pool with a leading / resolves to the pool already open', (t) => {
  const a = makeTransferable(new Uint8Array([5, 6]), { transferRequired: false });
  const r = revive({ ...a.toHandle(), segment: `/${pool.name}` });
  t.is(r.pool, pool, 'the same Pool, not a second opening');
  t.is(r.segment, pool.name, "the pool's own spelling");
  t.is(r.array[1], 6);
  r.release();
  a.release();
  t.throws(() => revive({ ...a.toHandle(), segment: `//${pool.name}` }), { code: 'ERR_INVALID_HANDLE' });
});

test('a named pool reached as /name is opened once: startPool accepts the spelling and close() unlinks it', (t) => {
  const env = { ...process.env };
  delete env.ARRAYPOOL_SEGMENT;
  const out = JSON.parse(execFileSync(process.execPath, [fixture('edges-child.mjs'), 'named-slash'], { env, encoding: 'utf8' }));
  t.deepEqual(out, { samePool: true, segment: true, startAgain: true, leftInDevShm: false });
});

test('a child that revives a handle before startPool gets that pool from startPool, not a second opening', (t) => {
  const a = makeTransferable(new Float64Array([42]), { transferRequired: false });
  const env = { ...process.env, EDGES_HANDLE: JSON.stringify(a) };
  const out = JSON.parse(execFileSync(process.execPath, [fixture('edges-child.mjs'), 'revive-then-start'], { env, encoding: 'utf8' }));
  t.deepEqual(out, { first: 42, samePool: true });
  a.release();
});

// 6. The README's soak command.

test("the README's soak command gives the kill storm a timeout that follows SOAK_SECONDS", (t) => {
  const command = /`SOAK_SECONDS=(\d+) npx ava (\S+) -m '([^']+)'`/.exec(repoFile('README.md'));
  t.truthy(command, 'the README names the soak command');
  const [, , file, pattern] = command;
  const spec = repoFile(file);
  const prefix = pattern.replace(/\*$/, '');
  const start = spec.indexOf(`test.serial('${prefix}`);
  t.not(start, -1, `${file} has a test matching ${pattern}`);
  const next = spec.indexOf('\ntest', start + 1);
  const body = spec.slice(start, next === -1 ? undefined : next);
  // ava's configured timeout (2m) would end a longer soak: the test must raise it from SOAK_SECONDS.
  t.regex(body, /SOAK_SECONDS/);
  t.regex(body, /t\.timeout\(\(soakSeconds \+ \d+\) \* 1000\)/);
});

// 7. Values from handles and callers reach native calls and copies only once checked.

test('a handle is read as own data: fields on the prototype or behind getters do not count', (t) => {
  const a = makeTransferable(new Uint8Array([1, 2, 3]), { transferRequired: false });
  const { __arraypool__, ...rest } = a.toHandle();
  const inherited = Object.assign(Object.create(rest), { __arraypool__ });
  t.throws(() => revive(inherited), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_HANDLE' });
  let runs = 0;
  const withGetter = { ...a.toHandle() };
  Object.defineProperty(withGetter, 'offset', { enumerable: true, get: () => (runs++, a.offset) });
  t.throws(() => revive(withGetter), { code: 'ERR_INVALID_HANDLE' });
  t.is(runs, 0, 'the getter never ran');
  const marker = { get __arraypool__() { runs++; return 1; } };
  t.is(revive(marker), marker, 'a getter named __arraypool__ is not a handle');
  t.is(runs, 0);
  a.release();
});

test.serial('a polluted Object.prototype cannot complete a handle', (t) => {
  const a = makeTransferable(new Uint8Array([1]), { transferRequired: false });
  const { segment, ...partial } = a.toHandle();
  Object.prototype.segment = segment; // eslint-disable-line no-extend-native
  try {
    t.throws(() => revive(partial), { code: 'ERR_INVALID_HANDLE' });
  } finally {
    delete Object.prototype.segment;
  }
  a.release();
});

test.serial('a setter or a read-only __arraypool__ on Object.prototype cannot take or stop a revived array\u2019s handle', (t) => {
  const a = makeTransferable(new Uint8Array([5, 6]));
  const sent = structuredClone(a);
  const stolen = [];
  for (const planted of [
    { set: (v) => stolen.push(v), configurable: true },
    { value: 'planted', writable: false, configurable: true },
  ]) {
    Object.defineProperty(Object.prototype, '__arraypool__', planted); // eslint-disable-line no-extend-native
    try {
      const r = revive(structuredClone(sent));
      t.deepEqual(Object.keys(r), ['__arraypool__'], 'an own property all the same');
      t.deepEqual(structuredClone(r), sent, 'its clone still carries the handle');
      t.is(r.array[1], 6);
      r.release();
    } finally {
      delete Object.prototype.__arraypool__;
    }
  }
  t.deepEqual(stolen, [], 'the setter never ran');
  revive(sent).release();
  a.release();
});

test('a handle\u2019s segment is printable ASCII in both forms', (t) => {
  const a = makeTransferable(new Uint8Array(4), { transferRequired: false });
  const compact = JSON.parse(JSON.stringify(a)).__arraypool__;
  const segment = a.segment;
  for (const bad of [`${segment}\u00e9`, `${'\u{1F600}'.repeat(101)}`, `${segment}\n`]) {
    t.throws(() => readHandle({ ...a.toHandle(), segment: bad }), { code: 'ERR_INVALID_HANDLE' }, 'object form');
    t.throws(() => readHandle({ __arraypool__: compact.replace(segment, bad) }), { code: 'ERR_INVALID_HANDLE' }, 'compact form');
  }
  t.deepEqual(readHandle(a), a.toHandle(), 'a live array gives its own handle');
  a.release();
});

test('__proto__ keys in a JSON message revive as own properties and pollute nothing', (t) => {
  const a = makeTransferable(new Uint8Array([9]), { transferRequired: false });
  const text = `{"__proto__": ${JSON.stringify(a)}, "nested": {"__proto__": {"polluted": ${JSON.stringify(a)}}}, "constructor": {"prototype": {"polluted": 1}}}`;
  const message = revive(JSON.parse(text));
  t.is(Object.getPrototypeOf(message), Object.prototype);
  t.true(Object.hasOwn(message, '__proto__'));
  const live = Object.getOwnPropertyDescriptor(message, '__proto__').value;
  t.true(live instanceof TransferableArray);
  t.is(live.array[0], 9);
  t.is(Object.getPrototypeOf(message.nested), Object.prototype);
  t.false('polluted' in {}, 'Object.prototype untouched');
  t.false('__arraypool__' in {});
  live.release();
  Object.getOwnPropertyDescriptor(message.nested, '__proto__').value.polluted.release();
  a.release();
});

test.serial('makeTransferable reads the real extent of the array: own length or byteLength cannot lie', (t) => {
  const data = new Float64Array([1, 2, 3, 4]);
  Object.defineProperty(data, 'length', { value: 2 });
  Object.defineProperty(data, 'byteLength', { value: 8 });
  const a = makeTransferable(data, { transferRequired: false });
  t.deepEqual(a.shape, [4]);
  t.deepEqual(Array.from(a.array), [1, 2, 3, 4]);
  a.release();
  const fake = Object.setPrototypeOf({ length: 4 }, Float64Array.prototype);
  leavesPoolAlone(t, () => t.throws(() => makeTransferable(fake), { instanceOf: ArrayPoolError, code: 'ERR_UNSUPPORTED_DTYPE' }));
  if (typeof globalThis.Float16Array === 'function') {
    t.throws(() => makeTransferable(new globalThis.Float16Array(2)), { code: 'ERR_UNSUPPORTED_DTYPE' });
  }
});

test('toTransferable shares the real range of a view, whatever its own properties say', (t) => {
  const y = zeros('float64', 10, { transferRequired: false });
  const view = y.array.subarray(2, 4);
  Object.defineProperty(view, 'byteLength', { value: 64 });
  Object.defineProperty(view, 'length', { value: 8 });
  const s = toTransferable(view);
  t.is(s.byteLength, 16);
  t.deepEqual(s.shape, [2]);
  t.is(s.byteOffset, 16);
  s.release();
  y.release();
});

test.serial('options are checked before anything is allocated', (t) => {
  const x = new Uint8Array(4);
  leavesPoolAlone(t, () => {
    for (const transferRequired of ['no', 0, 1, null]) {
      t.throws(() => makeTransferable(x, { transferRequired }), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_ARG' }, String(transferRequired));
      t.throws(() => empty('uint8', 4, { transferRequired }), { code: 'ERR_INVALID_ARG' }, String(transferRequired));
    }
    t.throws(() => makeTransferable(x, null), { code: 'ERR_INVALID_ARG' });
    t.throws(() => zeros('uint8', 4, 'fast'), { code: 'ERR_INVALID_ARG' });
    t.throws(() => makeTransferable(x, { shape: { length: 1, 0: 4 } }), { code: 'ERR_INVALID_SHAPE' });
    t.throws(() => empty('uint8', [Object.create(null)]), { code: 'ERR_INVALID_SHAPE' });
    t.throws(() => empty(Object.create(null), 4), { code: 'ERR_UNSUPPORTED_DTYPE' });
  });
});
