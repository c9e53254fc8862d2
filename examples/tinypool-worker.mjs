// The worker module of examples/tinypool.mjs.
import { revive, startPool } from '../dist/index.js';

// Top level: runs once per worker process.
startPool();

/** Sums the slice and doubles it in place (the parent sees the writes). */
export default function sumAndDouble({ x }) {
  const t = revive(x);
  let sum = 0;
  for (let i = 0; i < t.array.length; i++) {
    sum += t.array[i];
    t.array[i] *= 2;
  }
  t.release();
  return sum;
}
