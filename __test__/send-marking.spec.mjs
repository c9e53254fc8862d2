// A handle counts as sent only when its message really leaves: a send that
// fails (or a task aborted before dispatch) leaves the arrays it encoded
// free to be released. And the JSON tags and `__proto__` keys of a
// message are the sender's data on every channel. (Review of issue 12.)
import test from 'ava';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

import { ArrayPoolError, ProcessPool, keep, makeTransferable, onMessage, send, startPool } from '../dist/index.js';

const ECHO = fileURLToPath(new URL('./fixtures/json-echo.mjs', import.meta.url));
const TASKS = fileURLToPath(new URL('./fixtures/map-tasks.mjs', import.meta.url));
const pool = startPool({ size: '256M' });

async function child(serialization) {
  const c = fork(ECHO, [], { serialization, execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  await once(c, 'message'); // 'ready'
  return c;
}

async function request(c, id, op, payload) {
  const answered = new Promise((resolve) => {
    const stop = onMessage(c, (msg) => {
      if (msg.id === id) {
        stop();
        resolve(keep(msg.answer));
      }
    });
  });
  await send(c, { id, op, payload });
  return answered;
}

async function stop(c) {
  const exited = once(c, 'exit');
  c.kill();
  await exited;
}

test.serial('a send refused while encoding marks nothing: release() frees, and its copies go at once (no GC)', async (t) => {
  const c = await child('json');
  try {
    const before = pool.stats();
    for (let i = 0; i < 20; i++) {
      const big = makeTransferable(new Float64Array(1 << 17));
      const error = await t.throwsAsync(send(c, { big, plain: new Float64Array(1 << 17), bad: new Map() }), { instanceOf: ArrayPoolError });
      t.is(error.code, 'ERR_NOT_SERIALIZABLE');
      big.release();
    }
    const after = pool.stats();
    t.is(after.usedBytes, before.usedBytes, 'neither the arrays nor the copies stayed');
    t.is(after.inFlightBlocks, before.inFlightBlocks);
  } finally {
    await stop(c);
  }
});

test.serial('a send to a disconnected child marks nothing: release() frees', async (t) => {
  const c = await child('advanced');
  await stop(c);
  const before = pool.stats();
  const arr = makeTransferable(new Float64Array(1 << 16));
  await t.throwsAsync(send(c, { arr }), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_ARG' });
  arr.release();
  t.is(pool.stats().usedBytes, before.usedBytes);
  t.is(pool.stats().inFlightBlocks, before.inFlightBlocks);
});

test.serial('a ProcessPool task aborted before dispatch marks nothing: release() frees', async (t) => {
  const pp = new ProcessPool({ module: TASKS, workers: 1 });
  const busy = new AbortController();
  const running = pp.exec('forever', [], { signal: busy.signal });
  running.catch(() => {});
  try {
    const before = pool.stats();
    const arr = makeTransferable(new Float64Array(1 << 16));
    const queued = new AbortController();
    const waiting = pp.exec('sumChunk', [arr, { index: 0, start: 0, end: 1 }], { signal: queued.signal });
    queued.abort();
    await t.throwsAsync(waiting, { instanceOf: ArrayPoolError, code: 'ERR_ABORTED' });
    arr.release();
    t.is(pool.stats().usedBytes, before.usedBytes);
    t.is(pool.stats().inFlightBlocks, before.inFlightBlocks);
  } finally {
    busy.abort();
    await pp.close();
  }
});

test.serial("on an advanced channel a JSON tag and an own __proto__ key are the sender's data", async (t) => {
  const c = await child('advanced');
  try {
    const payload = {
      tagged: { __arraypool_json__: 'number', value: 'NaN' },
      bogus: { __arraypool_json__: 'bogus' },
      parsed: JSON.parse('{"__proto__":{"polluted":1},"b":2}'),
    };
    const answer = await request(c, 'a', 'echo', payload);
    t.deepEqual(answer.tagged, { __arraypool_json__: 'number', value: 'NaN' });
    t.deepEqual(answer.bogus, { __arraypool_json__: 'bogus' });
    t.true(Object.hasOwn(answer.parsed, '__proto__'), 'an own property, not the prototype');
    t.deepEqual(answer.parsed.__proto__, { polluted: 1 });
    t.is(answer.parsed.b, 2);
    t.is({}.polluted, undefined);
  } finally {
    await stop(c);
  }
});

test.serial('on a JSON channel an own __proto__ key arrives as an own key too', async (t) => {
  const c = await child('json');
  try {
    const answer = await request(c, 'j', 'echo', { parsed: JSON.parse('{"__proto__":{"polluted":1},"b":2}') });
    t.true(Object.hasOwn(answer.parsed, '__proto__'));
    t.is(answer.parsed.b, 2);
    t.is({}.polluted, undefined);
  } finally {
    await stop(c);
  }
});
