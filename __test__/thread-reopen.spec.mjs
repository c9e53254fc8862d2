// A worker thread revives a compact handle of a pool open in the process
// but not in its isolate, while the main thread closes that pool between
// the native attach and the thread's opening it: the thread then opens the
// pool as a new attachment, takes the block again through it and gives the
// first reference back. Interleaved with a test hook and Atomics, not timing.
import test from 'ava';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

import { revive } from '../dist/index.js';
import { hooks } from './testing-addon.mjs';

const OWNER = fileURLToPath(new URL('./fixtures/owner.mjs', import.meta.url));
const DIST = new URL('../dist/index.js', import.meta.url).href;
const TRANSFERABLE = new URL('../dist/src/transferable.js', import.meta.url).href;

test.serial('a pool closed by the main thread while a thread attaches from it: the thread reopens it and keeps the block', async (t) => {
  const env = { ...process.env, TEST_BACKING: 'shm', ARRAYPOOL_SIZE: '4M' };
  delete env.ARRAYPOOL_SEGMENT;
  const owner = fork(OWNER, [], { env, serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const exited = once(owner, 'exit');
  const signal = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `Promise.all([import(${JSON.stringify(DIST)}), import(${JSON.stringify(TRANSFERABLE)})]).then(([{ revive }, { testHooks }]) => {
       const { parentPort, workerData } = require('node:worker_threads');
       // Between the native attach and opening the pool here: let the main
       // thread close it, and wait until it has.
       testHooks.beforeOpenInIsolate = () => {
         parentPort.postMessage('close it now');
         Atomics.wait(workerData, 0, 0);
       };
       parentPort.on('message', (text) => {
         try {
           const r = revive({ __arraypool__: text });
           const pool = r.pool;
           const values = [...r.array];
           r.release();
           const reply = { values, segment: r.segment, processes: pool.stats().processes };
           parentPort.postMessage(reply);
         } catch (error) {
           parentPort.postMessage({ error: error.code ?? String(error), message: error.message });
         }
       });
       parentPort.postMessage('ready');
     });`,
    { eval: true, workerData: signal },
  );
  // Listening at once: a message sent while nobody listens is lost.
  const ready = once(worker, 'message');
  const greeted = once(owner, 'message');
  try {
    const [hello] = await greeted;
    await ready;
    // The main thread opens the owner's pool (it did not create it: its
    // close leaves the name in place) and reads the handle's compact form.
    const theirs = revive(hello.handle);
    const text = JSON.parse(JSON.stringify(theirs)).__arraypool__;
    const taken = hooks.testCompactAttaches();
    worker.postMessage(text);
    t.is((await once(worker, 'message'))[0], 'close it now');
    theirs.release();
    theirs.pool.close();
    Atomics.store(signal, 0, 1);
    Atomics.notify(signal, 0);
    const [reply] = await once(worker, 'message');
    t.like(reply, { values: [1, 2, 3], segment: hello.name });
    // The owner and this process's new attachment: the closed one left once
    // the reference taken through it was given back (a kept one keeps it
    // attached: 3).
    t.is(reply.processes, 2);
    t.is(hooks.testCompactAttaches() - taken, 1, 'taken natively, then again through the reopened pool');
  } finally {
    await worker.terminate();
    owner.send('exit');
    await exited;
  }
});

test.serial('a worker thread that opened a pool closes its open when it ends, so the creator can close and unlink the pool', async (t) => {
  const { existsSync } = await import('node:fs');
  const { makeTransferable, startPool } = await import('../dist/index.js');
  const name = `arraypool-test-teardown-${process.pid}`;
  const pool = startPool({ backing: 'shm', name, size: '4M' });
  const sent = makeTransferable(new Float64Array([7, 8]), { transferRequired: false });
  const text = JSON.parse(JSON.stringify(sent)).__arraypool__;
  const worker = (how) =>
    new Worker(
      `import(${JSON.stringify(DIST)}).then(({ revive }) => {
         const { parentPort } = require('node:worker_threads');
         // Listening keeps the thread alive until it closes its port or is terminated.
         parentPort.on('message', (text) => {
           const r = revive({ __arraypool__: text });
           const values = [...r.array];
           r.release();
           parentPort.postMessage(values);
           // 'end': nothing left to do, the thread ends by itself.
           if (${JSON.stringify(how)} === 'end') parentPort.close();
         });
       });`,
      { eval: true },
    );
  try {
    for (const how of ['end', 'terminate']) {
      const w = worker(how);
      const exited = once(w, 'exit');
      w.postMessage(text);
      t.deepEqual((await once(w, 'message'))[0], [7, 8], how);
      if (how === 'terminate') await w.terminate();
      await exited;
    }
    // A thread still using the pool keeps it: close() leaves it to that
    // thread, and its end gives the last open back (once, not twice).
    const holder = worker('stay');
    const holderExited = once(holder, 'exit');
    holder.postMessage(text);
    t.deepEqual((await once(holder, 'message'))[0], [7, 8], 'stay');
    sent.release();
    t.true(existsSync(`/dev/shm/${name}`));
    pool.close();
    t.true(existsSync(`/dev/shm/${name}`), 'a thread still has the pool open');
    await holder.terminate();
    await holderExited;
    t.false(existsSync(`/dev/shm/${name}`), 'the threads had given their opens back: the pool was left and its name unlinked');
  } finally {
    if (!pool.closed) pool.close();
  }
});
