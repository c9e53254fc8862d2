// Backpressure (issue 12, item 2): `send` waits while the copies it sent to
// a channel and that are not given back reach the channel's budget, and
// `onMessage` gives a message's arrays back when the handler is done.
// Real child processes; every bound asserted here follows from the rules,
// not from timing.
import test from 'ava';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker } from 'node:worker_threads';

import { ArrayPoolError, bytesInFlight, getPool, send, startPool } from '../dist/index.js';
import { channelBudget } from '../dist/src/backpressure.js';
import { settledUsedBytes } from './helpers.mjs';

const CONSUMER = fileURLToPath(new URL('./fixtures/frame-consumer.mjs', import.meta.url));
const MIB = 1 << 20;
const FRAME_ELEMENTS = MIB / 8;

startPool({ size: '256M' });

async function consumer(mode = 'sum') {
  const child = fork(CONSUMER, [mode], { serialization: 'advanced', execArgv: ['--expose-gc'] });
  const [hello] = await once(child, 'message');
  if (!hello.ready) throw new Error('unexpected hello');
  /** A control message and its answer, outside send/onMessage (and so outside the budget). */
  const ask = async (cmd) => {
    const answer = once(child, 'message');
    child.send({ cmd });
    return (await answer)[0];
  };
  return { child, ask };
}

/** Stops a consumer and reaps it: a release it had queued behind a busy lock dies with it. */
async function stop(child) {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = once(child, 'exit');
    child.kill();
    await exited;
  }
  getPool().reap();
}

const frame = (i) => new Float64Array(FRAME_ELEMENTS).fill(i);

const settledUsed = () => settledUsedBytes(getPool());

test.serial('a stream of 1 MiB frames keeps the pool within the budget, in order, with every frame intact', async (t) => {
  const before = await settledUsed();
  const { child, ask } = await consumer();
  const budget = 8 * MIB;
  const frames = 200;
  let peak = 0;
  try {
    for (let i = 0; i < frames; i++) {
      await send(child, { i, frame: frame(i) }, { maxBytesInFlight: budget });
      peak = Math.max(peak, getPool().stats().usedBytes - before);
    }
    const { count, order, wrong } = await ask('count');
    t.is(count, frames);
    t.deepEqual(order, [...Array(frames).keys()]);
    t.is(wrong, 0, 'every frame arrived filled with its index');
    // A send copies only while fewer than `budget` bytes are out: the
    // budget, one frame, and the block headers.
    t.true(peak <= budget + MIB + 64 * 1024, `peak ${peak} bytes`);
    t.true(peak >= MIB, 'frames went through the pool');
  } finally {
    await stop(child);
  }
  // Every frame given back (a release the consumer had queued, reaped).
  t.is(bytesInFlight(child), 0);
  t.is(await settledUsed(), before);
});

test.serial('sends not awaited still wait their turn: the pool stays bounded and the order is kept', async (t) => {
  const before = await settledUsed();
  const { child, ask } = await consumer();
  const budget = 4 * MIB;
  const frames = 40;
  try {
    const sends = [];
    let peak = 0;
    for (let i = 0; i < frames; i++) {
      sends.push(send(child, { i, frame: frame(i) }, { maxBytesInFlight: budget }).then(() => {
        peak = Math.max(peak, getPool().stats().usedBytes - before);
      }));
    }
    // Only the first four could copy at once (4 MiB budget); the rest wait.
    t.true(getPool().stats().usedBytes - before <= budget + 64 * 1024);
    await Promise.all(sends);
    const { order, wrong } = await ask('count');
    t.deepEqual(order, [...Array(frames).keys()]);
    t.is(wrong, 0);
    t.true(peak <= budget + MIB + 64 * 1024, `peak ${peak} bytes`);
  } finally {
    await stop(child);
  }
  t.is(await settledUsed(), before);
});

test.serial('kept frames count until freed: send waits for them, an abort gives up, a drop lets it go', async (t) => {
  const before = await settledUsed();
  const { child, ask } = await consumer('keep');
  const budget = 4 * MIB;
  try {
    for (let i = 0; i < 4; i++) await send(child, { i, frame: frame(i) }, { maxBytesInFlight: budget });
    t.is(bytesInFlight(child), 4 * MIB);
    // The fifth waits: a control message sent after it arrives before it.
    const controller = new AbortController();
    const aborted = send(child, { i: 4, frame: frame(4) }, { maxBytesInFlight: budget, signal: controller.signal });
    const fifth = send(child, { i: 4, frame: frame(4) }, { maxBytesInFlight: budget });
    t.is((await ask('count')).count, 4, 'no frame went beyond the budget');
    controller.abort();
    const error = await t.throwsAsync(aborted);
    t.is(error.code, 'ERR_ABORTED');
    t.is(getPool().stats().usedBytes - before, 4 * MIB + 4 * 64, 'the aborted send copied nothing');
    // The consumer lets its frames go: the waiting send leaves.
    await ask('drop');
    await fifth;
    const { order, wrong } = await ask('count');
    t.deepEqual(order, [0, 1, 2, 3, 4]);
    t.is(wrong, 0);
  } finally {
    await stop(child);
  }
  t.is(await settledUsed(), before);
});

test.serial('a send waiting on a channel that closes fails with ERR_CHANNEL_CLOSED; Infinity never waits', async (t) => {
  const { child, ask } = await consumer('keep');
  try {
    for (let i = 0; i < 2; i++) await send(child, { i, frame: frame(i) }, { maxBytesInFlight: 2 * MIB });
    const waiting = send(child, { i: 2, frame: frame(2) }, { maxBytesInFlight: 2 * MIB });
    t.is((await ask('count')).count, 2);
    child.disconnect();
    const error = await t.throwsAsync(waiting);
    t.true(error instanceof ArrayPoolError);
    t.is(error.code, 'ERR_CHANNEL_CLOSED');
  } finally {
    await stop(child);
  }
  getPool().reap();
  const { child: other, ask: askOther } = await consumer('keep');
  try {
    for (let i = 0; i < 6; i++) await send(other, { i, frame: frame(i) }, { maxBytesInFlight: Infinity });
    t.is((await askOther('count')).count, 6);
  } finally {
    await stop(other);
  }
  getPool().reap();
});

test('maxBytesInFlight must be a number > 0', async (t) => {
  for (const bad of [0, -1, NaN, '8M']) {
    const error = await t.throwsAsync(send(process, {}, { maxBytesInFlight: bad }));
    t.is(error.code, 'ERR_INVALID_ARG', String(bad));
  }
});

test('a send let go by an abort is copied before any later send starts, whatever its limit', async (t) => {
  const budget = channelBudget({}, () => ({ isOpen: () => true }));
  budget.bytes = 10; // full for a limit of 5
  const order = [];
  const first = budget.admit(5, undefined).then(() => order.push('first'));
  const controller = new AbortController();
  const second = budget.admit(5, controller.signal);
  budget.bytes = 0; // room: the first may go, once something calls next()
  controller.abort(); // the abort lets the first go
  await t.throwsAsync(second, { code: 'ERR_ABORTED' });
  // The first has not copied yet (no admitted()): even Infinity waits behind it.
  const later = budget.admit(Infinity, undefined);
  t.not(later, undefined);
  void later.then(() => order.push('later'));
  await first;
  budget.admitted();
  await later;
  budget.admitted();
  t.deepEqual(order, ['first', 'later']);
});

test('sending to a port or thread adds one close listener per channel, not one per send', async (t) => {
  const { port1, port2 } = new MessageChannel();
  for (let i = 0; i < 20; i++) await send(port1, { i });
  t.is(port1.listenerCount('close'), 1);
  port1.close();
  port2.close();
});

test('a send to a thread that has exited is ERR_CHANNEL_CLOSED, and copies nothing', async (t) => {
  const worker = new Worker('require("node:worker_threads").parentPort.on("message", () => {})', { eval: true });
  await worker.terminate();
  const before = getPool().stats();
  const error = await t.throwsAsync(send(worker, { frame: frame(1) }));
  t.is(error.code, 'ERR_CHANNEL_CLOSED');
  t.is(getPool().stats().usedBytes, before.usedBytes);
});
