// send / onMessage across a forked child, a worker thread and a MessageChannel.
// Serial: tests compare pool stats.
import test from 'ava';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker } from 'node:worker_threads';

import {
  ArrayPoolError,
  DEFAULT_INLINE_BELOW_BYTES,
  TransferableArray,
  getPool,
  keep,
  makeTransferable,
  onMessage,
  send,
  startPool,
  toTransferable,
  zeros,
} from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';

const CHILD = fileURLToPath(new URL('./fixtures/channel-child.mjs', import.meta.url));
const DIST = new URL('../dist/index.js', import.meta.url).href;
const LARGE = DEFAULT_INLINE_BELOW_BYTES;

startPool({ size: '256M' });

/** Forks the channel child; `request(op, payload)` resolves with its answer. */
async function startChild(serialization = 'advanced') {
  const child = fork(CHILD, [serialization], { serialization, execArgv: ['--expose-gc'] });
  const waiting = new Map();
  const stop = onMessage(child, ({ id, answer }) => {
    waiting.get(id)?.(keep(answer));
    waiting.delete(id);
  });
  const answerTo = (id) => new Promise((resolve) => waiting.set(id, resolve));
  await answerTo('ready');
  let next = 0;
  return {
    child,
    async request(op, payload) {
      const id = next++;
      const answer = answerTo(id);
      await send(child, { id, op, payload }, { serialization });
      return answer;
    },
    async stop() {
      stop();
      const exited = once(child, 'exit');
      child.disconnect();
      await exited;
    },
  };
}

async function withChild(serialization, fn) {
  const c = await startChild(serialization);
  try {
    return await fn(c);
  } finally {
    await c.stop();
  }
}

async function settledStats() {
  await collectGarbage();
  return getPool().stats();
}

const inPool = (array) => {
  const shared = toTransferable(array);
  shared?.release();
  return shared !== undefined;
};

test.serial('send to a child: large arrays through the pool, small ones inline, each arriving as it was sent', async (t) => {
  await withChild('advanced', async (c) => {
    const transferable = makeTransferable(new Int32Array([1, 2, 3]));
    const seen = await c.request('describe', {
      large: new Float32Array(LARGE).fill(1.5),
      small: new BigInt64Array([-5n]),
      transferable,
      buffer: Buffer.alloc(LARGE, 7),
    });
    t.deepEqual(seen.large, { type: 'Float32Array', transferable: false, length: LARGE, first: '1.5', inPool: true });
    t.deepEqual(seen.small, { type: 'BigInt64Array', transferable: false, length: 1, first: '-5', inPool: false });
    t.deepEqual(seen.transferable, { type: 'Int32Array', transferable: true, length: 3, first: '1', inPool: true });
    t.like(seen.buffer, { type: 'Buffer', length: LARGE, first: '7', inPool: true });
    t.false(transferable.released, 'a TransferableArray sent stays the caller’s');
    transferable.release();
  });
});

test.serial('the receiver owns the copies: the sender lets go once sent, nothing is left once the receiver is done', async (t) => {
  const before = await settledStats();
  await withChild('advanced', async (c) => {
    const sent = send(c.child, { id: 'unanswered', op: 'describe', payload: { a: new Float64Array(LARGE), b: new Uint8Array(LARGE) } });
    await sent;
    t.is(getPool().stats().heldReferences, before.heldReferences, 'no reference left on the sending side');
    const childStats = await c.request('stats');
    t.is(childStats.heldReferences, 0, 'the child dropped them (plain arrays: by GC)');
    const after = getPool().stats();
    t.is(after.liveBlocks, before.liveBlocks, JSON.stringify(after));
    t.is(after.inFlightBlocks, before.inFlightBlocks);
    t.is(after.usedBytes, before.usedBytes);
  });
});

test.serial('an array that views the pool is sent without a copy: the child writes into it', async (t) => {
  await withChild('advanced', async (c) => {
    const block = zeros('uint16', 8);
    const liveBefore = getPool().stats().liveBlocks;
    t.is(await c.request('fill', { array: block.array.subarray(2, 4), value: 9 }), 'filled');
    t.deepEqual(Array.from(block.array), [0, 0, 9, 9, 0, 0, 0, 0]);
    t.is(getPool().stats().liveBlocks, liveBefore, 'no block was made for it');
    await c.request('fill', { array: block, value: 1 });
    t.deepEqual(Array.from(block.array), [1, 1, 1, 1, 1, 1, 1, 1], 'and a TransferableArray');
    block.release();
  });
});

test.serial('the child answers with send(process): arrays come back revived, nested in Maps and arrays', async (t) => {
  await withChild('advanced', async (c) => {
    const large = new Float64Array(LARGE).fill(3);
    const echoed = await c.request('echo', new Map([['list', [large, new Int8Array([-1])]]]));
    const [back, small] = echoed.get('list');
    t.true(back instanceof Float64Array);
    t.true(inPool(back));
    t.is(back[LARGE - 1], 3);
    t.deepEqual(Array.from(small), [-1]);
    t.false(inPool(small));
  });
});

test.serial('a send that fails rejects and leaves no block waiting in flight', async (t) => {
  const before = await settledStats();
  await withChild('advanced', async (c) => {
    const error = await t.throwsAsync(send(c.child, { large: new Float64Array(LARGE), f() {} }));
    t.regex(error.message, /could not be cloned/);
  });
  const stats = getPool().stats();
  t.is(stats.inFlightBlocks, before.inFlightBlocks);
  t.is(stats.liveBlocks, before.liveBlocks);
  const exited = fork(CHILD, [], { serialization: 'advanced', execArgv: ['--expose-gc'] });
  exited.kill('SIGKILL');
  await once(exited, 'exit');
  const closed = await t.throwsAsync(send(exited, { large: new Float64Array(LARGE) }), { instanceOf: ArrayPoolError });
  t.is(closed.code, 'ERR_INVALID_ARG');
  t.is(getPool().stats().inFlightBlocks, before.inFlightBlocks);
  const released = makeTransferable(new Uint8Array(4));
  released.release();
  t.is((await t.throwsAsync(send(process, { released }))).code, 'ERR_NOT_HELD');
});

test.serial("a JSON channel (serialization: 'json'): small arrays inline (tagged), large ones through the pool", async (t) => {
  await withChild('json', async (c) => {
    const seen = await c.request('describe', { tiny: new Uint8ClampedArray([200]), large: new Uint8ClampedArray(LARGE).fill(200) });
    t.deepEqual(seen.tiny, { type: 'Uint8ClampedArray', transferable: false, length: 1, first: '200', inPool: false });
    t.deepEqual(seen.large, { type: 'Uint8ClampedArray', transferable: false, length: LARGE, first: '200', inPool: true });
  });
});

test.serial('worker threads: send to a Worker, and back from its parentPort', async (t) => {
  const worker = new Worker(
    `import(${JSON.stringify(DIST)}).then(({ onMessage, send }) => {
       const { parentPort } = require('node:worker_threads');
       const stop = onMessage(parentPort, ({ x, t }) => {
         x[0] = 42;
         send(parentPort, { sum: x.reduce((a, b) => a + b, 0), t, y: new Float64Array(${LARGE}).fill(x[0]) });
         stop();
       });
       parentPort.postMessage('ready');
     });`,
    { eval: true },
  );
  try {
    await once(worker, 'message');
    const answer = new Promise((resolve) => {
      const stop = onMessage(worker, (message) => {
        stop();
        resolve(keep(message));
      });
    });
    const x = new Float64Array(LARGE).fill(1);
    const transferable = makeTransferable(new Uint8Array([5]));
    await send(worker, { x, t: transferable });
    const { sum, t: back, y } = await answer;
    t.is(sum, 42 + (LARGE - 1), 'the thread read the array (and wrote its own copy)');
    t.is(x[0], 1, 'a copy was sent: the caller’s heap array is untouched');
    t.true(back instanceof TransferableArray);
    t.is(back.array[0], 5);
    t.true(y instanceof Float64Array && inPool(y));
    t.is(y[LARGE - 1], 42);
    back.release();
    transferable.release();
  } finally {
    await worker.terminate();
  }
});

test.serial('onMessage over a MessageChannel: a stale handle goes to onError; unsubscribing stops the handler', async (t) => {
  const { port1, port2 } = new MessageChannel();
  const gone = makeTransferable(new Float64Array(4), { transferRequired: false });
  const handle = gone.toHandle();
  gone.release();
  const received = [];
  const errors = [];
  const stop = onMessage(port2, (m) => received.push(m), { onError: (e) => errors.push(e) });
  port1.postMessage({ handle });
  await send(port1, { n: 1, small: new Int32Array([1]) });
  while (received.length + errors.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
  t.is(errors.length, 1);
  t.is(errors[0].code, 'ERR_STALE_HANDLE');
  t.is(received.length, 1);
  t.deepEqual(Array.from(received[0].small), [1]);
  stop();
  t.is(port2.listenerCount('message'), 0, 'unsubscribed');
  port1.close();
});
