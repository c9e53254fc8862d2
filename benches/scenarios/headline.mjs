/**
 * Scenario 1, the npshmex headline: a forked worker adds one to `length`
 * float64 (2e7 = 160 MB) and the result comes back to the parent. Each
 * competitor is one way of doing that round trip, timed from "the parent has
 * its input" to "the parent holds the checked result".
 *
 * The competitors are also what scenario 5 (memory) runs, one per fresh
 * process pair, so each is a small object: optional `prepare` (inputs that
 * exist before the clock starts), `round` (one round trip), `dispose`.
 */
import { empty, makeTransferable, revive } from '../../dist/index.js';
import { BenchChild } from '../lib/children.mjs';
import { addOne, checkResult, fillInput } from '../lib/compute.mjs';
import { roundRobin, timeMs } from '../lib/measure.mjs';
import { scenarioResult } from '../lib/results.mjs';
import { ThreadWorker } from '../lib/thread-worker.mjs';
import { runnable, shmName, shmTypedArray } from '../lib/shm.mjs';

/** What the competitors share in one parent process. */
export class HeadlineContext {
  /** @param {number} length @param {BenchChild} worker */
  constructor(length, worker) {
    this.length = length;
    this.worker = worker;
  }

  #heapInput;

  /** The input as an ordinary heap Float64Array, made on first use (scenario 5 counts it only where used). */
  get heapInput() {
    if (!this.#heapInput) {
      this.#heapInput = new Float64Array(this.length);
      fillInput(this.#heapInput);
    }
    return this.#heapInput;
  }
}

export const COMPETITORS = [
  {
    id: 'bare',
    label: 'bare in-process compute (new output array)',
    reference: true,
    round(ctx) {
      const y = new Float64Array(ctx.length);
      addOne(ctx.heapInput, y);
      checkResult('bare', y, ctx.length);
    },
  },
  {
    id: 'bare-reused-output',
    label: 'bare in-process compute (output array reused)',
    prepare(ctx) {
      ctx.reusedOutput = new Float64Array(ctx.length);
    },
    round(ctx) {
      addOne(ctx.heapInput, ctx.reusedOutput);
      checkResult('bare-reused-output', ctx.reusedOutput, ctx.length);
    },
    dispose(ctx) {
      ctx.reusedOutput = undefined;
    },
  },
  {
    id: 'worker-threads',
    label: 'worker_threads, input and reused output in the transfer list',
    prepare(ctx) {
      ctx.thread = new ThreadWorker();
      // Like zero copy: the input is produced in the buffer that travels (no
      // heap input beside it, which scenario 5 would count), and the output
      // buffer is made once and comes back each round.
      const x = new Float64Array(ctx.length);
      fillInput(x);
      ctx.threadBuffers = { x, y: new Float64Array(ctx.length) };
    },
    async round(ctx) {
      const { x, y } = await ctx.thread.request(ctx.threadBuffers.x, ctx.threadBuffers.y);
      checkResult('worker-threads', y, ctx.length);
      ctx.threadBuffers = { x, y };
    },
    async dispose(ctx) {
      await ctx.thread?.terminate();
      ctx.thread = undefined;
      ctx.threadBuffers = undefined;
    },
  },
  {
    id: 'ipc-advanced',
    label: "child.send, serialization: 'advanced'",
    async round(ctx) {
      const { y } = await ctx.worker.request({ op: 'add-one/heap', x: ctx.heapInput });
      checkResult('ipc-advanced', y, ctx.length);
    },
  },
  {
    id: 'arraypool-copy-in',
    label: 'arraypool makeTransferable (one copy in)',
    async round(ctx) {
      const x = makeTransferable(ctx.heapInput);
      const reply = await ctx.worker.request({ op: 'add-one/pool', x });
      x.release();
      const { y } = revive(reply);
      checkResult('arraypool-copy-in', y.array, ctx.length);
      y.release();
    },
  },
  {
    id: 'arraypool-zero-copy',
    label: 'arraypool zero copy (input and output made with empty())',
    prepare(ctx) {
      // The data is produced in the pool in the first place: no heap input.
      ctx.poolInput = empty('float64', ctx.length);
      fillInput(ctx.poolInput.array);
    },
    async round(ctx) {
      const reply = await ctx.worker.request({ op: 'add-one/pool', x: ctx.poolInput });
      const { y } = revive(reply);
      checkResult('arraypool-zero-copy', y.array, ctx.length);
      y.release();
    },
    dispose(ctx) {
      ctx.poolInput?.release();
      ctx.poolInput = undefined;
    },
  },
  {
    id: 'shm-typed-array',
    label: 'shm-typed-array, one POSIX segment per array (npshmex design)',
    async round(ctx) {
      // npshmex / shared_numpy: a fresh segment for the input (copied in)
      // and one for the output, made by the worker; the parent maps the
      // output, and both segments are unlinked once the result was used.
      const shm = shmTypedArray();
      const input = shmName('in');
      const output = shmName('out');
      const x = shm.createPosix(input, ctx.length, 'Float64Array');
      x.set(ctx.heapInput);
      await ctx.worker.request({ op: 'add-one/shm', input, output, length: ctx.length });
      const y = shm.getPosix(output, 'Float64Array');
      checkResult('shm-typed-array', y, ctx.length);
      // munmap + shm_unlink: x and y dangle from here on and are not touched.
      shm.destroy(input);
      shm.destroy(output);
    },
  },
];

/** The forked worker's side of the round trips (called from child.mjs). */
export const workerHandlers = {
  'add-one/heap'({ x }) {
    const y = new Float64Array(x.length);
    addOne(x, y);
    return { reply: { y } };
  },
  'add-one/pool'(msg) {
    const { x } = revive(msg);
    const y = empty('float64', x.shape);
    addOne(x.array, y.array);
    x.release();
    // With transferRequired (the default) the block outlives this release
    // until the parent revives it.
    return { reply: { y }, afterSend: () => y.release() };
  },
  'add-one/shm'({ input, output, length }) {
    const shm = shmTypedArray();
    const x = shm.getPosix(input, 'Float64Array');
    const y = shm.createPosix(output, length, 'Float64Array');
    addOne(x, y);
    // Unmap only; the parent unlinks both names once it has the result.
    shm.detachPosix(input);
    shm.detachPosix(output);
    return { reply: { op: 'done' } };
  },
};

/** Scenario 1 in the runner: all competitors side by side, one worker. */
export async function run({ length, rounds, warmup }) {
  const worker = new BenchChild('worker');
  await worker.ready();
  const ctx = new HeadlineContext(length, worker);
  try {
    for (const c of runnable(COMPETITORS)) await c.prepare?.(ctx);
    const samples = await roundRobin(
      runnable(COMPETITORS).map((c) => ({ id: c.id, round: () => timeMs(() => c.round(ctx)) })),
      { rounds, warmup, between: () => worker.request({ op: 'gc' }) },
    );
    return scenarioResult(
      {
        id: 'headline',
        title: `1. add one to ${length.toExponential(0).replace('+', '')} float64 (${(length * 8) / 1e6} MB) in a forked worker, result back in the parent`,
        unit: 'ms',
        note: 'time per round trip; reference: the same compute in-process into a new array',
      },
      runnable(COMPETITORS).map((c) => ({ id: c.id, label: c.label, reference: c.reference, samples: samples.get(c.id) })),
    );
  } finally {
    for (const c of runnable(COMPETITORS)) await c.dispose?.(ctx);
    await worker.stop();
  }
}
