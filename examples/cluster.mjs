// arraypool with node:cluster, using send/onMessage. Run: node examples/cluster.mjs
import cluster from 'node:cluster';
import { once } from 'node:events';

import { empty, getPool, keep, onMessage, send, startPool } from '../dist/index.js';

// The primary starts the pool before forking; each worker's top level
// attaches to it (cluster workers inherit the environment).
startPool();

/** Forks a worker and gives it one slice of `data`; resolves with its answer. */
async function runWorker(rows) {
  const worker = cluster.fork();
  // The worker says 'ready' once it listens: a message sent earlier (say on
  // 'online', before its module has run) would be lost.
  await once(worker, 'message');
  // The answer's arrays are released when the handler returns, unless kept.
  const answer = new Promise((resolve) => onMessage(worker.process, (m) => resolve(keep(m))));
  // A subarray of pool memory goes as a handle of that range: no copy.
  await send(worker.process, { rows });
  const result = await answer;
  worker.disconnect();
  await once(worker, 'exit');
  return result;
}

if (cluster.isPrimary) {
  cluster.setupPrimary({ serialization: 'advanced' });
  const n = 1_000_000;
  const data = empty('float64', n);
  for (let i = 0; i < n; i++) data.array[i] = i;
  const results = await Promise.all([runWorker(data.array.subarray(0, n / 2)), runWorker(data.array.subarray(n / 2))]);
  const total = results.reduce((sum, r) => sum + r.sum, 0);
  const last = results[1].squares;
  console.log(`cluster: sum=${total} from ${results.length} workers, last square=${last[last.length - 1]}`);
  data.release();
} else {
  const stop = onMessage(process, async ({ rows }) => {
    stop();
    let sum = 0;
    const squares = new Float64Array(rows.length); // large: sent back through the pool
    for (let i = 0; i < rows.length; i++) {
      sum += rows[i];
      squares[i] = rows[i] * rows[i];
    }
    await send(process, { sum, squares });
  });
  process.send('ready');
}
