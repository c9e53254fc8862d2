// arraypool inside workerpool's process workers. Run: node examples/workerpool.mjs
import workerpool from 'workerpool';

import { getPool, makeTransferable, revive, startPool } from '../dist/index.js';

// Before the pool forks: the workers inherit the pool through ARRAYPOOL_SEGMENT.
startPool();

const workers = workerpool.pool(new URL('./workerpool-worker.mjs', import.meta.url).pathname, {
  workerType: 'process',
  maxWorkers: 2,
  forkOpts: { serialization: 'advanced' },
});

try {
  const n = 1_000_000;
  const x = makeTransferable(Float64Array.from({ length: n }, (_, i) => i));
  // x crosses as its handle (a few numbers); the worker reads the same memory.
  const y = revive(await workers.exec('addOne', [x]));
  console.log(`workerpool: y[0]=${y.array[0]} y[${n - 1}]=${y.array[n - 1]} (${y.byteLength} bytes, no copy)`);
  x.release();
  y.release();
} finally {
  await workers.terminate();
}
console.log(`live blocks left: ${getPool().stats().liveBlocks}`);
