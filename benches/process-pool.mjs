// ProcessPool benchmarks (run after `npm run build:ts`):
//
//   node --expose-gc benches/process-pool.mjs [--quick]   the npshmex headline: add one to
//        2e7 float64 in a worker, through ProcessPool and workerpool, next to bare compute
//   node --expose-gc benches/process-pool.mjs --threshold  inline IPC vs the pool per array
//        size, 64 B..1 MiB (how DEFAULT_INLINE_BELOW_BYTES was chosen)
//
// This file is also the task module of both pools: a ProcessPool worker
// imports it (and finds its exports), a workerpool worker runs it with
// BENCH_ROLE=workerpool.
import { fileURLToPath } from 'node:url';

import workerpool from 'workerpool';

import { ProcessPool, empty, getPool, startPool } from '../dist/index.js';

const SELF = fileURLToPath(import.meta.url);
const QUICK = process.argv.includes('--quick');
const N = QUICK ? 2e6 : 2e7;
const ROUNDS = QUICK ? 3 : 7;

function addOneInto(x, y) {
  for (let i = 0; i < x.length; i++) y[i] = x[i] + 1;
  return y;
}

// --- tasks (run in the workers) ---

/** Output made in the pool: the zero-copy way; returned as a TransferableArray so the caller can release it. */
export function addOne(x) {
  const y = empty('float64', x.length);
  addOneInto(x, y.array);
  return y;
}

/** Output on the worker's heap: copied into the pool once on the way back. */
export function addOneHeap(x) {
  return addOneInto(x, new Float64Array(x.length));
}

/** Takes an array, answers with a number (threshold measurement: one way). */
export function length(x) {
  return x.length;
}

/** Answers with a fresh copy (threshold measurement: both ways). */
export function copy(x) {
  return x.slice();
}

// --- measurement (in the parent) ---

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function collect() {
  globalThis.gc?.();
}

/** Median wall time of `rounds` calls after one warm-up; `check` validates each result. */
async function time(rounds, run, check) {
  check(await run());
  const ms = [];
  for (let r = 0; r < rounds; r++) {
    collect();
    const t0 = performance.now();
    const result = await run();
    ms.push(performance.now() - t0);
    check(result);
  }
  return median(ms);
}

function checker(source) {
  const first = source[0] + 1;
  const last = source[source.length - 1] + 1;
  return (result) => {
    const y = result.array ?? result;
    if (y[0] !== first || y[y.length - 1] !== last) throw new Error('wrong result');
    result.release?.();
  };
}

async function headline() {
  startPool();
  const source = Float64Array.from({ length: N }, () => Math.random());
  const check = checker(source);
  const rows = [];
  rows.push(['bare in-process compute (allocates its output, like `x + 1`)', await time(ROUNDS, () => addOneInto(source, new Float64Array(N)), check)]);
  const preallocated = new Float64Array(N);
  rows.push(['bare in-process compute into a preallocated output', await time(ROUNDS, () => addOneInto(source, preallocated), check)]);

  const pool = new ProcessPool({ module: SELF, workers: 1 });
  try {
    rows.push([
      'ProcessPool, copy-in args (output via `empty()`)',
      await time(ROUNDS, () => pool.run('addOne', source), check),
    ]);
    rows.push([
      'ProcessPool, copy-in args, heap output (copied back in)',
      await time(ROUNDS, () => pool.run('addOneHeap', source), check),
    ]);
    const input = empty('float64', N);
    input.array.set(source);
    rows.push([
      'ProcessPool, zero copy (input and output from `empty()`)',
      await time(ROUNDS, () => pool.run('addOne', input), check),
    ]);
    input.release();
  } finally {
    await pool.close();
  }

  const wp = workerpool.pool(SELF, {
    workerType: 'process',
    maxWorkers: 1,
    forkOpts: { serialization: 'advanced', env: { ...process.env, BENCH_ROLE: 'workerpool' } },
  });
  try {
    rows.push([
      "workerpool (process, serialization 'advanced')",
      await time(ROUNDS, () => wp.exec('addOneHeap', [source]), check),
    ]);
  } finally {
    await wp.terminate();
  }

  const bare = rows[0][1];
  console.log(`\n${N.toExponential(0)} float64 (${(N * 8) / 1e6} MB), add one in one worker process; median of ${ROUNDS} after a warm-up\n`);
  console.log('| method | median | vs bare |\n| --- | ---: | ---: |');
  for (const [label, ms] of rows) console.log(`| ${label} | ${ms.toFixed(1)} ms | ${(ms / bare).toFixed(2)}x |`);
  console.log(`\npool after the run: ${JSON.stringify(getPool().stats().liveBlocks)} live blocks`);
}

/**
 * Median round trip per array size, all inline vs all through the pool, for
 * an array sent one way (`length`) and both ways (`copy`). Calls alternate
 * between the two pools so that load from other processes hits both alike;
 * garbage is collected every few calls (untimed) so pool blocks of plain
 * results are reused, as in a steady state.
 */
async function threshold() {
  startPool();
  const inline = new ProcessPool({ module: SELF, workers: 1, inlineBelowBytes: Infinity });
  const pooled = new ProcessPool({ module: SELF, workers: 1, inlineBelowBytes: 0 });
  const calls = QUICK ? 40 : 200;
  console.log('| bytes | one way: inline | one way: pool | pool/inline | both ways: inline | both ways: pool | pool/inline |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  try {
    for (let bytes = 64; bytes <= 2 ** 20; bytes *= 2) {
      const x = new Float64Array(bytes / 8).fill(1);
      const cells = [];
      for (const task of ['length', 'copy']) {
        const samples = new Map([[inline, []], [pooled, []]]);
        for (let i = 0; i < calls + 10; i++) {
          for (const [pool, times] of samples) {
            const t0 = performance.now();
            await pool.run(task, x);
            if (i >= 10) times.push((performance.now() - t0) * 1000); // the first 10 warm up
          }
          if (i % 4 === 0) {
            collect();
            await new Promise((r) => setImmediate(r)); // finalizers run on a later tick
          }
        }
        const [a, b] = [median(samples.get(inline)), median(samples.get(pooled))];
        cells.push(`${a.toFixed(0)} µs`, `${b.toFixed(0)} µs`, (b / a).toFixed(2));
      }
      console.log(`| ${bytes} | ${cells.join(' | ')} |`);
    }
  } finally {
    await Promise.all([inline.close(), pooled.close()]);
  }
}

const isMain = process.argv[1] === SELF;
if (process.env.BENCH_ROLE === 'workerpool') {
  workerpool.worker({ addOneHeap });
} else if (isMain) {
  await (process.argv.includes('--threshold') ? threshold() : headline());
}
