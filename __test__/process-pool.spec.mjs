// ProcessPool with real worker processes: arguments and results through the
// pool, worker deaths, aborts, errors, closing. Serial: tests compare pool stats.
import test from 'ava';
import { fileURLToPath } from 'node:url';

import {
  ArrayPoolError,
  DEFAULT_INLINE_BELOW_BYTES,
  ProcessPool,
  TransferableArray,
  empty,
  getPool,
  startPool,
  toTransferable,
  zeros,
} from '../dist/index.js';
import { collectGarbage, DTYPE_SAMPLES } from './helpers.mjs';

const TASKS = fileURLToPath(new URL('./fixtures/process-pool-tasks.mjs', import.meta.url));
const CJS_TASKS = new URL('./fixtures/process-pool-tasks.cjs', import.meta.url);

startPool({ size: '256M' });

/** A pool that is closed after `fn`, whatever happens. */
async function withProcessPool(options, fn) {
  const pool = new ProcessPool({ module: TASKS, workers: 1, ...options });
  try {
    return await fn(pool);
  } finally {
    await pool.close();
  }
}

/** Waits (polling, no time limit but ava's) until `condition()` holds. */
async function until(condition) {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}

/** Pool stats once the garbage of earlier tests (plain result arrays) is collected. */
async function settledStats() {
  await collectGarbage();
  return getPool().stats();
}

const isAlive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const inPool = (array) => {
  const shared = toTransferable(array);
  shared?.release();
  return shared !== undefined;
};

const LARGE = DEFAULT_INLINE_BELOW_BYTES; // elements: every dtype is then at least that many bytes
const DTYPES = DTYPE_SAMPLES;
const make = (Ctor, length, sample) => (Ctor === Buffer ? Buffer.alloc(length, sample) : new Ctor(length).fill(sample));

test.serial('typed arrays of every dtype, nested in objects, arrays and Maps, reach the task as plain arrays', async (t) => {
  await withProcessPool({}, async (pool) => {
    const large = Object.fromEntries(DTYPES.map(([Ctor, sample]) => [Ctor.name, make(Ctor, LARGE, sample)]));
    const small = DTYPES.map(([Ctor, sample]) => make(Ctor, 2, sample));
    const deep = new Map([['level1', { level2: [[new Float64Array(LARGE).fill(2)]] }]]);
    const seen = await pool.run('describe', { large }, small, deep);
    for (const [Ctor, sample] of DTYPES) {
      t.deepEqual(
        seen[`$[0].large.${Ctor.name}`],
        { type: Ctor.name, length: LARGE, first: String(Ctor === Uint8ClampedArray ? 255 : make(Ctor, 1, sample)[0]), inPool: true },
        `${Ctor.name}, large: through the pool`,
      );
    }
    DTYPES.forEach(([Ctor], i) => {
      t.like(seen[`$[1][${i}]`], { type: Ctor.name, length: 2, inPool: false }, `${Ctor.name}, small: inline`);
    });
    t.like(seen['$[2].level1.level2[0][0]'], { type: 'Float64Array', length: LARGE, first: '2', inPool: true }, 'inside a Map, any depth');
  });
});

test.serial('the arguments the parent copied in are released when the task settles', async (t) => {
  const before = await settledStats();
  await withProcessPool({}, async (pool) => {
    const during = await pool.run('liveBlocksDuring', new Float64Array(LARGE), [new Int32Array(LARGE)]);
    t.is(during, before.liveBlocks + 2, 'two blocks while the task runs');
    t.is(getPool().stats().liveBlocks, before.liveBlocks, 'none after');
  });
  t.is(getPool().stats().usedBytes, before.usedBytes);
});

test.serial('a small array travels inline (no block), a large one through the pool', async (t) => {
  const baseline = (await settledStats()).liveBlocks;
  await withProcessPool({}, async (pool) => {
    const smallBytes = DEFAULT_INLINE_BELOW_BYTES - 8;
    t.is(await pool.run('liveBlocksDuring', new Float64Array(smallBytes / 8)), baseline, 'below the threshold: no block');
    t.is(await pool.run('liveBlocksDuring', new Float64Array(DEFAULT_INLINE_BELOW_BYTES / 8)), baseline + 1, 'at the threshold: a block');
  });
  await withProcessPool({ inlineBelowBytes: 0 }, async (pool) => {
    t.is(await pool.run('liveBlocksDuring', new Uint8Array(1)), baseline + 1, 'inlineBelowBytes 0: every array through the pool');
  });
  await withProcessPool({ inlineBelowBytes: Infinity }, async (pool) => {
    t.is(await pool.run('liveBlocksDuring', new Uint8Array(1 << 20)), baseline, 'Infinity: every array inline');
  });
});

test.serial('arrays already in the pool are shared, not copied: the task writes into the caller’s memory', async (t) => {
  await withProcessPool({}, async (pool) => {
    const transferable = zeros('float64', 4);
    const result = await pool.run('fillAndReturn', transferable, 5);
    t.deepEqual(Array.from(transferable.array), [5, 5, 5, 5], 'a TransferableArray argument');
    t.false(result instanceof TransferableArray, 'the task returned a plain array: a plain array comes back');
    result[0] = 9;
    t.is(transferable.array[0], 9, 'the result views the same block');

    const block = empty('int16', 64);
    const rows = block.array.subarray(16, 32); // a plain view of part of a block
    const before = getPool().stats().liveBlocks;
    await pool.run('fillAndReturn', rows, 3);
    t.is(block.array[15], 0);
    t.is(block.array[16], 3);
    t.is(block.array[31], 3);
    t.is(block.array[32], 0, 'exactly the subarray’s range');
    t.is(getPool().stats().liveBlocks, before, 'no new block for it');
    transferable.release();
    block.release();
  });
});

test.serial('a result of several arrays in an object comes back revived, each of its kind', async (t) => {
  const before = await settledStats();
  await withProcessPool({}, async (pool) => {
    const n = LARGE;
    const result = await pool.run('several', n);
    t.is(result.label, 'ok');
    t.true(result.fromHeap instanceof Float64Array);
    t.is(result.fromHeap[n - 1], n - 1);
    t.true(inPool(result.fromHeap), 'a large heap array came back through the pool');
    t.true(result.nested.view instanceof Int32Array);
    t.true(inPool(result.nested.view));
    t.is(result.nested.view[n - 1], 7);
    t.true(result.transferable instanceof TransferableArray, 'a TransferableArray comes back as one');
    t.deepEqual(result.transferable.shape, [2, n / 2]);
    t.is(result.transferable.array[0], 0.5);
    t.deepEqual(Array.from(result.small), [1, 2, 3]);
    t.false(inPool(result.small), 'a small array came inline');
    result.transferable.release();
  });
  // The plain arrays go with garbage collection; nothing stays in flight.
  await collectGarbage();
  const after = getPool().stats();
  t.is(after.liveBlocks, before.liveBlocks, JSON.stringify(after));
  t.is(after.usedBytes, before.usedBytes);
  t.is(after.inFlightBlocks, before.inFlightBlocks);
});

test.serial('a worker SIGKILLed mid-task rejects with ERR_WORKER_DIED, is replaced, and its references are reaped', async (t) => {
  const baseline = await settledStats();
  await withProcessPool({ workers: 2 }, async (pool) => {
    const pidsBefore = pool.pids;
    const error = await t.throwsAsync(pool.run('holdAndDie', new Float64Array(LARGE)), { instanceOf: ArrayPoolError });
    t.is(error.code, 'ERR_WORKER_DIED');
    t.regex(error.message, /worker process \d+ died \(signal SIGKILL\) while running task "holdAndDie"/);
    const deadPid = Number(/process (\d+)/.exec(error.message)[1]);
    t.true(pidsBefore.includes(deadPid));
    t.false(pool.pids.includes(deadPid), 'the dead worker is gone');
    t.is(pool.pids.length, 2, 'and replaced');
    const stats = getPool().stats();
    t.is(stats.usedBytes, baseline.usedBytes, 'what it held was reaped');
    t.is(stats.liveBlocks, baseline.liveBlocks);
    const pids = await Promise.all([pool.run('pid'), pool.run('pid')]);
    t.true(pids.every((pid) => pool.pids.includes(pid)), 'the pool keeps working');
  });
});

test.serial('a worker killed from outside while running rejects its task and is replaced', async (t) => {
  await withProcessPool({}, async (pool) => {
    const flag = zeros('int32', 2, { transferRequired: false });
    const running = pool.run('waitForRelease', flag);
    await until(() => flag.array[0] === 1);
    const pid = flag.array[1];
    process.kill(pid, 'SIGKILL');
    const error = await t.throwsAsync(running, { instanceOf: ArrayPoolError });
    t.is(error.code, 'ERR_WORKER_DIED');
    t.true(error.message.includes(`worker process ${pid} died (signal SIGKILL)`), error.message);
    t.not(await pool.run('pid'), pid);
    flag.release();
  });
});

test.serial('an aborted queued task never starts', async (t) => {
  await withProcessPool({}, async (pool) => {
    const flag = zeros('int32', 2, { transferRequired: false });
    const counter = zeros('int32', 1, { transferRequired: false });
    const blocker = pool.run('waitForRelease', flag);
    const controller = new AbortController();
    const queued = pool.exec('count', [counter], { signal: controller.signal });
    await until(() => flag.array[0] === 1);
    controller.abort(new Error('not needed'));
    const error = await t.throwsAsync(queued, { instanceOf: ArrayPoolError });
    t.is(error.code, 'ERR_ABORTED');
    t.is(error.cause?.message, 'not needed', 'the abort reason is the cause');
    flag.array[0] = 2;
    t.is(await blocker, 'released', 'the running task was not disturbed');
    t.is(await pool.run('count', counter), 1, 'the aborted task never ran: this is the first count');
    const already = pool.exec('count', [counter], { signal: AbortSignal.abort() });
    t.is((await t.throwsAsync(already)).code, 'ERR_ABORTED', 'an already aborted signal rejects at once');
    t.is(counter.array[0], 1);
    flag.release();
    counter.release();
  });
});

test.serial('aborting a running task rejects it with ERR_ABORTED and replaces its worker', async (t) => {
  const before = await settledStats();
  await withProcessPool({}, async (pool) => {
    const flag = zeros('int32', 2, { transferRequired: false });
    const controller = new AbortController();
    const running = pool.exec('waitForRelease', [flag, new Float64Array(LARGE)], { signal: controller.signal });
    await until(() => flag.array[0] === 1);
    const pid = flag.array[1];
    controller.abort();
    t.is((await t.throwsAsync(running, { instanceOf: ArrayPoolError })).code, 'ERR_ABORTED');
    await until(() => !pool.pids.includes(pid));
    t.false(isAlive(pid), 'the worker was killed');
    t.not(await pool.run('pid'), pid, 'a new worker runs the next task');
    flag.release();
  });
  t.is(getPool().stats().usedBytes, before.usedBytes, 'the aborted task’s arguments were freed');
});

test.serial('an error thrown in a task rejects with its name, message and the worker’s stack', async (t) => {
  await withProcessPool({}, async (pool) => {
    const error = await t.throwsAsync(pool.run('fail', 'bad input'));
    t.is(error.name, 'TypeError');
    t.is(error.message, 'bad input');
    t.regex(error.stack, /at fail \(.*process-pool-tasks\.mjs:\d+:\d+\)/, 'the stack is the worker’s');
    const thrown = await t.throwsAsync(pool.run('throwString'));
    t.is(thrown.message, 'task threw a non-error: plain string');
    const unknown = await t.throwsAsync(pool.run('nope'), { instanceOf: ArrayPoolError });
    t.is(unknown.code, 'ERR_UNKNOWN_TASK');
    t.true(unknown.message.includes('"nope"'));
    t.is((await t.throwsAsync(pool.run('notAFunction'))).code, 'ERR_UNKNOWN_TASK');
    t.is((await t.throwsAsync(pool.run('toString'))).code, 'ERR_UNKNOWN_TASK', 'inherited properties are not tasks');
    t.is(await pool.run('pid'), pool.pids[0], 'an error does not cost the worker');
  });
});

test.serial('arguments or a result that cannot be serialized reject the task, not the pool', async (t) => {
  const before = await settledStats();
  await withProcessPool({}, async (pool) => {
    const badArgument = await t.throwsAsync(pool.run('describe', new Float64Array(LARGE), () => {}));
    t.regex(badArgument.message, /could not be cloned/);
    const badResult = await t.throwsAsync(pool.run('returnsFunction'));
    t.regex(badResult.message, /could not be cloned/);
    t.is(typeof (await pool.run('pid')), 'number', 'the worker still answers');
  });
  t.is(getPool().stats().usedBytes, before.usedBytes, 'the copies made for either were freed');
});

test.serial('close: queued tasks reject, running ones finish, workers exit, run afterwards rejects', async (t) => {
  const pool = new ProcessPool({ module: TASKS, workers: 1 });
  const flag = zeros('int32', 2, { transferRequired: false });
  const running = pool.run('waitForRelease', flag);
  const queued = pool.run('pid');
  await until(() => flag.array[0] === 1);
  const pid = flag.array[1];
  const closed = pool.close();
  t.is((await t.throwsAsync(queued, { instanceOf: ArrayPoolError })).code, 'ERR_PROCESS_POOL_CLOSED');
  flag.array[0] = 2;
  t.is(await running, 'released');
  await closed;
  t.false(isAlive(pid), 'the worker exited');
  t.deepEqual(pool.pids, []);
  t.is(getPool().stats().processes, 1, 'and left the pool');
  const after = await t.throwsAsync(pool.run('pid'), { instanceOf: ArrayPoolError });
  t.is(after.code, 'ERR_PROCESS_POOL_CLOSED');
  await pool.close(); // idempotent
  flag.release();
});

test.serial('Symbol.asyncDispose closes the pool', async (t) => {
  const pool = new ProcessPool({ module: TASKS, workers: 1 });
  const pid = await pool.run('pid');
  await pool[Symbol.asyncDispose]();
  t.false(isAlive(pid));
  t.is((await t.throwsAsync(pool.run('pid'))).code, 'ERR_PROCESS_POOL_CLOSED');
});

test.serial("serialization 'json': small typed arrays inline (tagged), or every one through the pool with inlineBelowBytes 0", async (t) => {
  await withProcessPool({ serialization: 'json' }, async (pool) => {
    const seen = await pool.run('describe', { tiny: new Int16Array([4, 5]) });
    t.deepEqual(seen['$[0].tiny'], { type: 'Int16Array', length: 2, first: '4', inPool: false });
    const result = await pool.run('several', 8);
    t.true(result.small instanceof Uint16Array, 'results too');
    t.true(result.transferable instanceof TransferableArray);
    result.transferable.release();
  });
  await withProcessPool({ serialization: 'json', inlineBelowBytes: 0 }, async (pool) => {
    const seen = await pool.run('describe', { tiny: new Int16Array([4, 5]) });
    t.deepEqual(seen['$[0].tiny'], { type: 'Int16Array', length: 2, first: '4', inPool: true });
  });
});

test.serial('a CommonJS task module given as a file URL works', async (t) => {
  const pool = new ProcessPool({ module: CJS_TASKS, workers: 1 });
  try {
    t.is(await pool.run('sum', new Float64Array([1, 2, 3.5])), 6.5);
  } finally {
    await pool.close();
  }
});

test.serial('a task module that fails to load rejects every task with its error; invalid options throw', async (t) => {
  const pool = new ProcessPool({ module: new URL('./fixtures/no-such-module.mjs', import.meta.url), workers: 1 });
  try {
    const error = await t.throwsAsync(pool.run('anything'));
    t.is(error.code, 'ERR_MODULE_NOT_FOUND');
  } finally {
    await pool.close();
  }
  t.throws(() => new ProcessPool({ module: TASKS, workers: 0 }), { instanceOf: ArrayPoolError, message: /workers/ });
  t.throws(() => new ProcessPool({ module: '' }), { instanceOf: ArrayPoolError });
});

test.serial('many tasks over two workers all complete, in any order, with no block left', async (t) => {
  const before = await settledStats();
  await withProcessPool({ workers: 2 }, async (pool) => {
    const inputs = Array.from({ length: 40 }, (_, i) => new Float64Array(LARGE / 8 + i).fill(i));
    const results = await Promise.all(inputs.map((x, i) => pool.run('fillAndReturn', x, i + 1)));
    results.forEach((r, i) => t.is(r[r.length - 1], i + 1));
  });
  await collectGarbage();
  t.is(getPool().stats().liveBlocks, before.liveBlocks);
});
