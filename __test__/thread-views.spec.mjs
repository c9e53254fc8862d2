// Arrays a worker thread makes and never reads (`.array`) are released when
// the thread exits: a thread's isolate runs no FinalizationRegistry callback
// at teardown, so in threads views are made at once (their napi finalizers
// do run then).
import test from 'ava';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';

import { getPool, startPool } from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';

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
