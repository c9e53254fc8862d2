// JSON channels (node:cluster's default, fork with serialization 'json'):
// send never changes data, refuses what JSON cannot carry before sending,
// leaks no block; cluster Workers as targets; ProcessPool workers leave
// quietly when their parent is killed. Serial: tests compare pool stats.
import test from 'ava';
import cluster from 'node:cluster';
import { fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { ArrayPoolError, ProcessPool, getPool, keep, makeTransferable, onMessage, send, startPool, zeros } from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';

const ECHO = fileURLToPath(new URL('./fixtures/json-echo.mjs', import.meta.url));
const ORPHANED = fileURLToPath(new URL('./fixtures/orphaned-pool.mjs', import.meta.url));
const TASKS = new URL('./fixtures/json-tasks.mjs', import.meta.url);
/** Above DEFAULT_JSON_INLINE_BELOW_BYTES (4 KiB): through the pool. */
const LARGE = 64 * 1024;

startPool({ size: '128M' });

/** Every kind of view, small (inline) and large (pool), with the values JSON would change. */
function everyKind() {
  const f64 = new Float64Array([NaN, -0, Infinity, -Infinity, 1.5, Number.MIN_VALUE]);
  const f32 = new Float32Array([1.5, 2.5, NaN, -0]);
  const backing = new Float64Array(LARGE / 8 + 16).map((_, i) => i - 0.5);
  backing[20] = -0;
  backing[21] = NaN;
  const kinds = {
    f32,
    f64,
    i8: new Int8Array([-128, 127]),
    u8: new Uint8Array([0, 255]),
    u8c: new Uint8ClampedArray([200]),
    i16: new Int16Array([-30000]),
    u16: new Uint16Array([60000]),
    i32: new Int32Array([-2e9]),
    u32: new Uint32Array([4e9]),
    i64: new BigInt64Array([-(2n ** 60n), 0n]),
    u64: new BigUint64Array([2n ** 63n]),
    buffer: Buffer.from('héllo'),
    dataView: new DataView(new Uint8Array([1, 2, 3, 4, 5]).buffer, 1, 3),
    arrayBuffer: new Uint8Array([9, 8, 7]).buffer,
    empty: new Float64Array(0),
    // A view with an offset, small and large: it arrives as the view, nothing around it.
    smallSub: new Int16Array([1, 2, 3, 4, 5]).subarray(1, 3),
    largeSub: backing.subarray(16),
    largeF32: new Float32Array(LARGE / 4).fill(NaN),
    largeI64: new BigInt64Array(LARGE / 8).fill(-7n),
    largeBuffer: Buffer.alloc(LARGE, 0xab),
  };
  if (typeof globalThis.Float16Array === 'function') {
    kinds.f16 = new globalThis.Float16Array([0.5, -0, NaN]);
    kinds.largeF16 = new globalThis.Float16Array(LARGE / 2).fill(1.5); // no pool dtype: inline at any size
  }
  return {
    ...kinds,
    nested: { list: [f32, { deep: [new Uint16Array([7])] }], numbers: [NaN, -0, Infinity, -Infinity, 0, 1e308] },
    nan: NaN,
    minusZero: -0,
    text: 'x\u2028\ud800',
    nothing: null,
  };
}

function assertSame(t, back, sent, path = 'message') {
  t.deepEqual(back, sent, path);
  if (ArrayBuffer.isView(sent)) {
    t.is(back.constructor, sent.constructor, `${path}: class`);
    t.is(back.byteLength, sent.byteLength, `${path}: byteLength`);
    if (!(sent instanceof DataView)) {
      for (let i = 0; i < sent.length; i++) {
        if (!Object.is(back[i], sent[i])) return t.fail(`${path}[${i}]: ${back[i]} instead of ${sent[i]}`);
      }
    }
  } else if (typeof sent === 'number') {
    t.true(Object.is(back, sent), `${path}: ${back} instead of ${sent}`);
  } else if (sent !== null && typeof sent === 'object' && !(sent instanceof ArrayBuffer)) {
    for (const key of Object.keys(sent)) assertSame(t, back[key], sent[key], `${path}.${key}`);
  }
}

/** A conversation with a JSON-channel peer; `target` is what send and onMessage are given. */
function converse(target) {
  const waiting = new Map();
  const stop = onMessage(target, ({ id, answer }) => {
    waiting.get(id)?.(keep(answer));
    waiting.delete(id);
  });
  let next = 0;
  return {
    stop,
    async request(op, payload) {
      const id = next++;
      const answer = new Promise((resolve) => waiting.set(id, resolve));
      await send(target, payload === undefined ? { id, op } : { id, op, payload });
      return answer;
    },
  };
}

async function baseline() {
  await collectGarbage();
  return getPool().stats();
}

function assertNoLeak(t, before) {
  const after = getPool().stats();
  t.is(after.liveBlocks, before.liveBlocks, JSON.stringify(after));
  t.is(after.inFlightBlocks, before.inFlightBlocks);
  t.is(after.usedBytes, before.usedBytes);
}

async function startClusterWorker() {
  cluster.setupPrimary({ exec: ECHO, execArgv: ['--expose-gc'] }); // serialization: JSON, cluster's default
  const worker = cluster.fork();
  // Node drops what is sent before the worker's module listens: wait for its hello.
  const [hello] = await once(worker, 'message');
  if (hello !== 'ready') throw new Error(`unexpected hello ${hello}`);
  return worker;
}

test.serial('node:cluster (JSON): send(worker) / onMessage(worker) carry every typed array kind and number exactly', async (t) => {
  const before = await baseline();
  const worker = await startClusterWorker();
  try {
    const c = converse(worker);
    // In a function of its own: the arrays that came back (pool views) are garbage once it returns.
    await (async () => {
      const sent = everyKind();
      const back = await c.request('echo', sent);
      assertSame(t, back, sent);
      t.is(back.largeSub.byteOffset, 0, 'a subarray arrives as the view alone');
    })();
    const { received, stats } = await c.request('stats');
    t.is(received, 2);
    t.is(stats.heldReferences, 0, 'the worker let go of everything');
    c.stop();
  } finally {
    worker.disconnect();
    await once(worker, 'exit');
  }
  await collectGarbage();
  assertNoLeak(t, before);
});

async function withJsonFork(fn) {
  const child = fork(ECHO, [], { serialization: 'json', execArgv: ['--expose-gc'] });
  try {
    await once(child, 'message');
    return await fn(child, converse(child));
  } finally {
    if (child.connected) child.disconnect();
    if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
  }
}

test.serial("fork with serialization 'json': the channel's mode is read, arrays round-trip, pool views go without a copy", async (t) => {
  const before = await baseline();
  await withJsonFork(async (child, c) => {
    await (async () => {
      const sent = everyKind();
      assertSame(t, await c.request('echo', sent), sent);
    })();
    // A pool view (small or large) goes as a handle of its range: the child sees it, no copy.
    const block = zeros('float32', 8);
    block.array.set([1, NaN, -0]);
    const liveBefore = getPool().stats().liveBlocks;
    const back = await c.request('echo', { view: block.array.subarray(0, 3), t: block });
    t.is(getPool().stats().liveBlocks, liveBefore, 'no block was made for them');
    assertSame(t, back.view, block.array.subarray(0, 3));
    t.deepEqual(Array.from(back.t.array), Array.from(block.array));
    back.t.release();
    block.release();
    const refused = await t.throwsAsync(send(child, { x: 1 }, { serialization: 'advanced' }), { instanceOf: ArrayPoolError });
    t.is(refused.code, 'ERR_INVALID_ARG');
    t.regex(refused.message, /channel uses 'json'/);
    t.is((await c.request('stats')).stats.heldReferences, 0);
    c.stop();
  });
  await collectGarbage();
  assertNoLeak(t, before);
});

test.serial('what JSON cannot carry is ERR_NOT_SERIALIZABLE, before anything is allocated or sent', async (t) => {
  const before = await baseline();
  await withJsonFork(async (child, c) => {
    const cyclic = { a: 1 };
    cyclic.self = cyclic;
    class Point {
      constructor() {
        this.x = NaN;
      }
    }
    const refused = {
      'a Map': [new Map([[1, 2]]), /message\.payload\.v over a JSON channel: it is a Map/],
      'a Set': [new Set([1]), /it is a Set/],
      'a BigInt': [10n, /it is a bigint/],
      'undefined in an array': [[1, undefined], /message\.payload\.v\[1\] over a JSON channel: it is undefined/],
      'a hole': [[1, , 3], /v\[1\] over/], // eslint-disable-line no-sparse-arrays
      'an undefined property': [{ a: undefined }, /v\.a over/],
      'a Date': [new Date(0), /Date/],
      'a function': [() => 1, /function/],
      'a symbol': [Symbol('s'), /symbol/],
      'a cycle': [cyclic, /cycle/],
      'an Error': [new Error('e'), /Error/],
      'a RegExp': [/x/, /RegExp/],
      'a boxed number': [Object(1), /Number/],
      'a SharedArrayBuffer': [new SharedArrayBuffer(8), /SharedArrayBuffer/],
      'the reserved key': [{ __arraypool_json__: 'number', value: 'NaN' }, /reserved/],
    };
    for (const [what, [v, message]] of Object.entries(refused)) {
      // A large array alongside: it would be copied into the pool if the walk got that far.
      const error = await t.throwsAsync(
        send(child, { id: 'never', op: 'echo', payload: { large: new Float64Array(LARGE), v } }),
        { instanceOf: ArrayPoolError },
        what,
      );
      t.is(error.code, 'ERR_NOT_SERIALIZABLE', what);
      t.regex(error.message, message, what);
    }
    // Class instances cross as their own properties (as both channels carry them), NaN kept.
    t.deepEqual(await c.request('echo', new Point()), { x: NaN });
    const { received, stats } = await c.request('stats');
    t.is(received, 2, 'none of the refused messages was sent');
    t.is(stats.heldReferences, 0);
    c.stop();
  });
  await collectGarbage();
  assertNoLeak(t, before);
});

test.serial("ProcessPool with serialization 'json': small arrays and NaN come back as they went; a Map is refused", async (t) => {
  const before = await baseline();
  const pool = new ProcessPool({ module: TASKS, workers: 1, serialization: 'json' });
  try {
    await (async () => {
      const x = new Float32Array([1.5, NaN, -0]);
      const big = makeTransferable(new Float64Array(LARGE / 8).fill(-0), { transferRequired: false });
      const back = await pool.run('echo', { x, n: -0, big, dv: new DataView(new ArrayBuffer(3)) });
      assertSame(t, back.x, x);
      t.true(Object.is(back.n, -0));
      t.true(back.big instanceof Float64Array && Object.is(back.big[0], -0), 'a pool view, as the task returned it');
      t.true(back.dv instanceof DataView && back.dv.byteLength === 3);
      big.release();
    })();
    const error = await t.throwsAsync(pool.run('echo', new Map()), { instanceOf: ArrayPoolError });
    t.is(error.code, 'ERR_NOT_SERIALIZABLE');
  } finally {
    await pool.close();
  }
  await collectGarbage();
  assertNoLeak(t, before);
});

test.serial("a ProcessPool's workers leave quietly when their parent is SIGKILLed mid-task (no unhandled EPIPE)", async (t) => {
  const env = { ...process.env };
  delete env.ARRAYPOOL_SEGMENT; // its own (anonymous) pool
  const parent = spawn(process.execPath, [ORPHANED], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  parent.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const stderrClosed = once(parent.stderr, 'close');
  const lines = createInterface({ input: parent.stdout });
  let pids;
  for await (const line of lines) {
    if (line.startsWith('pids ')) pids = line.slice(5).split(' ').map(Number);
    if (line.startsWith('running ')) break; // a task runs: its answer will meet a dead parent
  }
  t.is(pids?.length, 2);
  parent.kill('SIGKILL');
  await once(parent, 'exit');
  // The workers share the parent's stderr: it closes once every one of them has exited.
  await stderrClosed;
  t.notRegex(stderr, /Unhandled 'error'|EPIPE|ERR_IPC_CHANNEL_CLOSED/, stderr);
  t.is(stderr, '');
  // Gone, or a zombie waiting for its new parent to reap it. A worker has
  // closed its stderr a moment before the kernel marks it exited: polled,
  // bounded (a worker that really stays fails here, nothing waits on time).
  const exited = (pid) => {
    const stat = `/proc/${pid}/stat`;
    try {
      return !existsSync(stat) || / [ZX] /.test(readFileSync(stat, 'utf8'));
    } catch {
      return true; // vanished between the two calls
    }
  };
  for (let tries = 0; tries < 1000 && !pids.every(exited); tries++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  for (const pid of pids) t.true(exited(pid), `worker ${pid} still runs`);
});
