// Arrays a worker thread makes and never reads (`.array`) are released when
// the thread exits: a thread's isolate runs no FinalizationRegistry callback
// at teardown, so in threads views are made at once (their napi finalizers
// do run then).
import test from 'ava';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';

import { getPool, makeTransferable, startPool } from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';
import { hooks } from './testing-addon.mjs';

const DIST = new URL('../dist/index.js', import.meta.url).href;
startPool({ size: '64M' });

test('a thread that exits holding 100 never-read arrays leaves no reference behind', async (t) => {
  await collectGarbage();
  const before = getPool().stats();
  const worker = new Worker(
    `import(${JSON.stringify(DIST)}).then(({ makeTransferable }) => {
       const kept = [];
       for (let i = 0; i < 100; i++) kept.push(makeTransferable(new Float64Array(16), { transferRequired: false }));
       const { parentPort } = require('node:worker_threads');
       globalThis.kept = kept;
       // Stay alive (holding them) until terminated: a thread with nothing
       // to do exits at once, releasing them before the parent looks.
       parentPort.on('message', () => {});
       parentPort.postMessage(kept.length);
     });`,
    { eval: true },
  );
  const [made] = await once(worker, 'message');
  t.is(made, 100);
  t.is(getPool().stats().heldReferences, before.heldReferences + 100, 'the thread holds them');
  await worker.terminate();
  await collectGarbage();
  const after = getPool().stats();
  t.is(after.heldReferences, before.heldReferences);
  t.is(after.liveBlocks, before.liveBlocks);
});

test.serial('a thread revives compact handles of a pool its isolate has not opened yet, and nothing stays held', async (t) => {
  // The native reader finds the pool open in the process (the main
  // thread's) but not in the thread's isolate, which then opens it. Each
  // array is let go by its sender before the thread takes it over (the
  // block waits in flight): giving the first reference back there would
  // free the block, and the thread would find the handle stale. Serial: the
  // native count is the process's.
  await collectGarbage();
  const before = getPool().stats();
  const taken = hooks.testCompactAttaches();
  const worker = new Worker(
    `import(${JSON.stringify(DIST)}).then(({ revive }) => {
       const { parentPort } = require('node:worker_threads');
       parentPort.on('message', (text) => {
         try {
           const r = revive({ __arraypool__: text });
           const reply = { values: [...r.array.subarray(0, 3)], segment: r.segment };
           r.release();
           parentPort.postMessage(reply);
         } catch (error) {
           parentPort.postMessage({ error: error.code ?? String(error) });
         }
       });
       parentPort.postMessage('ready');
     });`,
    { eval: true },
  );
  try {
    await once(worker, 'message');
    for (let i = 0; i < 3; i++) {
      // Larger than the small-block cache takes (64 KiB): freed, the block
      // would get a new generation.
      const data = new Float64Array(16384);
      data.set([4, 5, i]);
      const sent = makeTransferable(data);
      const text = JSON.parse(JSON.stringify(sent)).__arraypool__;
      sent.release();
      t.is(getPool().stats().inFlightBlocks, before.inFlightBlocks + 1, 'it waits for the thread');
      worker.postMessage(text);
      const [reply] = await once(worker, 'message');
      t.deepEqual(reply, { values: [4, 5, i], segment: getPool().name }, `array ${i}`);
      t.like(getPool().stats(), { heldReferences: before.heldReferences, inFlightBlocks: before.inFlightBlocks, usedBytes: before.usedBytes });
    }
    t.is(hooks.testCompactAttaches() - taken, 3, 'all three read natively');
  } finally {
    await worker.terminate();
  }
  await collectGarbage();
  t.like(getPool().stats(), { heldReferences: before.heldReferences, usedBytes: before.usedBytes });
});
