// arraypool inside tinypool's child_process runtime. Run: node examples/tinypool.mjs
import Tinypool from 'tinypool';

import { getPool, makeTransferable, revive, startPool } from '../dist/index.js';

startPool();

const workers = new Tinypool({
  filename: new URL('./tinypool-worker.mjs', import.meta.url).href,
  runtime: 'child_process',
  serialization: 'advanced',
  // tinypool forks with only the env it is given: pass ours, which now
  // names the pool (ARRAYPOOL_SEGMENT).
  env: process.env,
  maxThreads: 2,
});

try {
  const n = 1_000_000;
  const x = makeTransferable(Float32Array.from({ length: n }, (_, i) => i % 10));
  const halves = [x.subarray(0, n / 2), x.subarray(n / 2)];
  // Each task gets a slice of the same block: no copy, one handle each.
  const sums = await Promise.all(halves.map((half) => workers.run({ x: half })));
  const total = sums.reduce((a, b) => a + b, 0);
  console.log(`tinypool: sum=${total} from ${sums.length} workers, doubled in place: x[9]=${x.array[9]}`);
  for (const t of [x, ...halves]) t.release();
} finally {
  await workers.destroy();
}
console.log(`live blocks left: ${getPool().stats().liveBlocks}`);
