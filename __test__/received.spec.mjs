// onMessage gives a message's arrays back when the handler is done (issue
// 12, item 2), unless kept. A MessageChannel in this process: the same
// pool on both ends, so the blocks' fate is visible in the stats.
import test from 'ava';
import { MessageChannel } from 'node:worker_threads';

import { TransferableArray, getPool, keep, makeTransferable, onMessage, send, startPool } from '../dist/index.js';
import { joinDelivery, runHandler } from '../dist/src/received.js';
import { collectGarbage, settledUsedBytes } from './helpers.mjs';

startPool({ size: '64M' });
const LARGE = 128 * 1024; // through the pool (above the inline threshold)

/** Sends one message over a fresh channel; resolves with what the handler returned and saw. */
async function deliver(message, handler, options) {
  const { port1, port2 } = new MessageChannel();
  try {
    const handled = new Promise((resolve, reject) => {
      onMessage(port2, (m) => {
        try {
          const result = handler(m);
          resolve({ message: m, result });
          return result;
        } catch (error) {
          reject(error);
        }
      }, options);
    });
    await send(port1, message);
    return await handled;
  } finally {
    port1.close();
  }
}

const usedNow = () => settledUsedBytes(getPool());

test.serial('the arrays of a message are released once the handler returns: emptied, their blocks freed at once', async (t) => {
  const before = await usedNow();
  const t1 = makeTransferable(new Float64Array(8).fill(3));
  let during;
  const { message } = await deliver({ plain: new Float64Array(LARGE).fill(1), t: t1 }, (m) => {
    during = { plain: m.plain.length, sum: m.t.array[0] + m.plain[LARGE - 1] };
  });
  t.deepEqual(during, { plain: LARGE, sum: 4 }, 'usable inside the handler');
  t.is(message.plain.length, 0, 'the plain array is empty afterwards');
  t.true(message.t instanceof TransferableArray && message.t.released);
  t1.release();
  // No garbage collection needed: the stats say so before any.
  t.is(getPool().stats().usedBytes, before);
});

test.serial('keep() exempts what it is given (the whole message, or one array); the rest is released', async (t) => {
  const before = await usedNow();
  const { message } = await deliver(
    { a: new Float64Array(LARGE).fill(1), b: new Float64Array(LARGE).fill(2), c: new Int32Array(LARGE).fill(3) },
    (m) => {
      keep(m.a);
      keep(new DataView(m.c.buffer, 4, 8)); // a view of a received array keeps that array
    },
  );
  t.is(message.a[0], 1, 'kept');
  t.is(message.b.length, 0, 'not kept');
  t.is(message.c[LARGE - 1], 3, 'kept through a view of it');
  const whole = (await deliver({ list: [new Int32Array(LARGE / 4).fill(7)], map: new Map([['x', new Uint8Array(LARGE)]]) }, keep)).message;
  t.is(whole.list[0][0], 7);
  t.is(whole.map.get('x').length, LARGE);
  // Kept plain arrays go with garbage collection, as before.
  await collectGarbage();
  t.true(getPool().stats().usedBytes > before);
});

test.serial('keep() of a TransferableArray\'s view (made inside the handler) keeps that TransferableArray', async (t) => {
  const sent = makeTransferable(new Float64Array(16).fill(6));
  const { message } = await deliver({ t: sent }, (m) => {
    keep(m.t.array);
  });
  t.false(message.t.released);
  t.is(message.t.array[15], 6);
  message.t.release();
  sent.release();
});

test.serial('an async handler keeps its arrays until its promise settles, fulfilled or rejected', async (t) => {
  let seenAfterAwait;
  const { message, result } = await deliver({ x: new Float64Array(LARGE).fill(5) }, async (m) => {
    await new Promise((r) => setImmediate(r));
    seenAfterAwait = m.x[0];
  });
  t.is(message.x.length, LARGE, 'still held while the promise is pending');
  await result.catch(() => {});
  await new Promise((r) => setImmediate(r));
  t.is(seenAfterAwait, 5);
  t.is(message.x.length, 0, 'released once it settled');


  // A rejection: released too, and the rejection still reaches whoever
  // holds the promise (the listener's caller: an unhandled rejection, as
  // without arraypool).
  const held = makeTransferable(new Float64Array(4));
  const delivery = joinDelivery({}, () => ({ message: {}, references: [held] }));
  const failed = runHandler(delivery, () => Promise.reject(new Error('handler failed')), true);
  const error = await t.throwsAsync(failed);
  t.is(error.message, 'handler failed');
  t.true(held.released);
});

test.serial('autoRelease: false leaves the arrays to garbage collection; keep() after the handler is ERR_NOT_HELD', async (t) => {
  const { message } = await deliver({ x: new Float64Array(LARGE).fill(9) }, () => {}, { autoRelease: false });
  t.is(message.x[0], 9);
  const released = (await deliver({ x: new Float64Array(LARGE) }, () => {})).message;
  const error = t.throws(() => keep(released));
  t.is(error.code, 'ERR_NOT_HELD');
  // Values that never came through onMessage: keep() leaves them alone.
  const own = new Float64Array(4);
  t.is(keep({ own }).own, own);
});

test.serial('a handler that forwards what it received (send, awaited or not) keeps it for the next receiver', async (t) => {
  const before = await usedNow();
  for (const awaited of [false, true]) {
    const ab = new MessageChannel();
    const bc = new MessageChannel();
    const arrived = new Promise((resolve) => onMessage(bc.port2, (m) => resolve({ first: m.frame[0], length: m.frame.length })));
    onMessage(ab.port2, async (m) => {
      const forwarded = send(bc.port1, m);
      if (awaited) await forwarded;
    });
    await send(ab.port1, { frame: new Float64Array(LARGE).fill(8) });
    t.deepEqual(await arrived, { first: 8, length: LARGE }, awaited ? 'awaited' : 'not awaited');
    ab.port1.close();
    bc.port1.close();
  }
  // Forwarded arrays are kept (freed by garbage collection, as before).
  t.is(await usedNow(), before);
});

test.serial('two listeners of one source both get the message whole; it is released after both', async (t) => {
  const { port1, port2 } = new MessageChannel();
  const lengths = [];
  let second;
  const both = new Promise((resolve) => {
    onMessage(port2, (m) => lengths.push(m.x.length));
    onMessage(port2, (m) => {
      lengths.push(m.x.length);
      second = m;
      resolve();
    });
  });
  await send(port1, { x: new Float64Array(LARGE) });
  await both;
  await new Promise((r) => setImmediate(r));
  t.deepEqual(lengths, [LARGE, LARGE]);
  t.is(second.x.length, 0, 'released once both were done');
  port1.close();
});

test.serial('a message with a stale handle: the error goes to onError, and its other blocks are taken over and freed', async (t) => {
  const before = await usedNow();
  const inFlightBefore = getPool().stats().inFlightBlocks;
  const gone = makeTransferable(new Float64Array(4), { transferRequired: false });
  const stale = gone.toHandle();
  gone.release();
  const sent = makeTransferable(new Float64Array(LARGE));
  const fine = sent.toHandle();
  sent.release(); // in flight: only a receiver can free it now
  t.is(getPool().stats().inFlightBlocks, inFlightBefore + 1);
  const { port1, port2 } = new MessageChannel();
  const failed = new Promise((resolve) => onMessage(port2, () => resolve('handled'), { onError: resolve }));
  port1.postMessage({ stale, fine });
  const error = await failed;
  t.is(error.code, 'ERR_STALE_HANDLE');
  t.is(getPool().stats().inFlightBlocks, inFlightBefore, 'the valid handle was taken over');
  t.is(await usedNow(), before);
  port1.close();
});
