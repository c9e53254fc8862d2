// A closed pool gives its memory back: once this process has left it and
// no ArrayBuffer over it is left, the segment is unmapped and its fd
// closed. Before, every pool a process opened stayed mapped (with all the
// pages it had touched) until the process exited.
import test from 'ava';
import { once } from 'node:events';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

import { empty, startPool } from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';

/** Whether this process maps the anonymous pool `name`. */
const mapped = (name) => readFileSync('/proc/self/maps', 'utf8').includes(`/memfd:${name} `);

/** Whether this process holds an fd of the anonymous pool `name`. */
function hasFd(name) {
  return readdirSync('/proc/self/fd').some((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === `/memfd:${name} (deleted)`;
    } catch {
      return false; // the fd readdir itself used, closed meanwhile
    }
  });
}

/**
 * Collects garbage until `name` is no longer mapped: a freed view's
 * finalizer runs on a later turn of the event loop (on Node 20, for a
 * buffer moved by structuredClone, only after a timers phase). A bounded
 * number of rounds; the 0 ms timer is a turn of the loop, not a wait.
 */
async function unmappedAfterGc(name) {
  for (let round = 0; round < 20 && mapped(name); round++) {
    await collectGarbage();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  return !mapped(name);
}

test.serial('a closed pool is unmapped and its fd closed once its arrays are gone; opening and closing pools keeps none of them', async (t) => {
  for (let i = 0; i < 3; i++) {
    const pool = startPool({ size: '16M' });
    const { name } = pool;
    t.true(mapped(name) && hasFd(name), 'an open pool is mapped');
    const read = empty('float64', 2 ** 20); // 8 MiB, touched
    read.array.fill(i);
    const lazy = empty('uint8', 1024); // its view never made
    read.release();
    lazy.release();
    pool.close();
    t.true(await unmappedAfterGc(name), `pool ${i} is unmapped`);
    t.false(hasFd(name), `pool ${i}'s fd is closed`);
    t.throws(() => pool.locator(), { code: 'ERR_POOL_CLOSED' });
    // A released array's handle can still be read (it marks nothing there).
    t.regex(JSON.stringify({ read }), /"__arraypool__":"2:/);
    t.is(read.toHandle().segment, name);
    t.is(typeof lazy.generation, 'number');
  }
});

test.serial('a view alive past close() keeps the pool mapped and readable; the pool goes when the view is released', async (t) => {
  const pool = startPool({ size: '16M' });
  const { name } = pool;
  const x = empty('float64', 1024);
  x.array.fill(5);
  pool.close();
  await collectGarbage();
  t.true(mapped(name));
  t.is(x.array[1023], 5);
  x.release();
  t.true(await unmappedAfterGc(name));
  t.is(x.array.length, 0, 'the released view is detached');
});

// Node 20 has no ArrayBuffer.prototype.transfer, and its structuredClone
// copies an external buffer's bytes instead of moving them.
const canMove = typeof ArrayBuffer.prototype.transfer === 'function';

(canMove ? test.serial : test.serial.skip)('an ArrayBuffer moved out of a view (transfer) keeps the pool mapped until it is collected', async (t) => {
  const pool = startPool({ size: '16M' });
  const { name } = pool;
  const x = empty('float64', 1024);
  x.array.fill(9);
  const buffer = x.array.buffer;
  let moved = buffer.transfer();
  t.is(x.array.length, 0, 'the view was detached by the move');
  x.release();
  pool.close();
  await collectGarbage();
  t.true(mapped(name), 'the moved buffer keeps the mapping');
  t.is(new Float64Array(moved)[1023], 9);
  moved = undefined;
  t.true(await unmappedAfterGc(name), 'unmapped once the moved buffer is collected');
});

for (const ending of ['ends', 'is terminated']) {
  (canMove ? test.serial : test.serial.skip)(`a buffer a worker thread moved out and posted stays readable after the thread's pool is closed and the thread ${ending}`, async (t) => {
    // Node calls a view's finalizer at a thread's teardown although the
    // backing store may live on elsewhere: the pool must stay mapped then.
    const worker = new Worker(
      `
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)}).then(({ startPool, empty }) => {
        const pool = startPool({ size: '16M' });
        const x = empty('float64', 1024);
        x.array.fill(7);
        const moved = x.array.buffer.transfer();
        x.release();
        pool.close();
        parentPort.postMessage({ name: pool.name, moved }, [moved]);
        if (${JSON.stringify(ending)} === 'is terminated') parentPort.on('message', () => {}); // stays until terminated
      });
      `,
      { eval: true },
    );
    const exited = once(worker, 'exit');
    const [{ name, moved }] = await once(worker, 'message');
    if (ending === 'is terminated') await worker.terminate();
    await exited;
    await collectGarbage();
    t.true(mapped(name), 'still mapped: the moved buffer views it');
    t.is(new Float64Array(moved)[1023], 7);
  });
}
