// The worker script of examples/workerpool.mjs.
import workerpool from 'workerpool';

import { empty, revive, startPool } from '../dist/index.js';

// Top level: runs once per worker process, attaching it to the parent's pool.
startPool();

workerpool.worker({
  addOne(handle) {
    const x = revive(handle);
    // The result is made in the pool and returned as its handle. It is
    // transferRequired (the default), so it outlives this process's
    // reference until the parent revives it.
    const y = empty('float64', x.shape);
    for (let i = 0; i < x.array.length; i++) y.array[i] = x.array[i] + 1;
    x.release();
    return y;
  },
});
