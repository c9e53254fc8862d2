/**
 * `npm run demo`: the npshmex headline in Node. A forked worker adds one to
 * 2e7 float64 (160 MB) and hands the result back; timed through arraypool
 * (one copy in, and zero copy), through plain `child.send` with advanced
 * serialization, and as bare in-process compute.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

import { empty, makeTransferable, revive, startPool, type TransferableArray } from '../index.js';

const N = Number(process.env.DEMO_LENGTH ?? 2e7);
const ROUNDS = Number(process.env.DEMO_ROUNDS ?? 5);

function addOne(x: Float64Array, y: Float64Array): void {
  for (let i = 0; i < x.length; i++) y[i] = (x[i] as number) + 1;
}

async function worker(): Promise<void> {
  startPool();
  process.on('message', (msg: { kind: string; x: unknown }) => {
    if (msg.kind === 'plain') {
      const x = msg.x as Float64Array;
      const y = new Float64Array(x.length);
      addOne(x, y);
      process.send?.({ y });
      return;
    }
    const x = revive(msg.x) as TransferableArray<Float64Array>;
    const y = empty('float64', x.shape);
    addOne(x.array, y.array);
    x.release();
    process.send?.({ y }, () => y.release());
  });
  process.send?.('ready');
}

async function roundTrip(child: ChildProcess, message: object): Promise<{ y: unknown }> {
  const reply = once(child, 'message') as Promise<[{ y: unknown }]>;
  child.send(message);
  return (await reply)[0];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** First and last element of a result, to check it without keeping it. */
type Ends = [number, number];
const ends = (y: Float64Array): Ends => [y[0] as number, y[y.length - 1] as number];

async function time(label: string, run: () => Promise<Ends> | Ends, source: Float64Array): Promise<number> {
  const ms: number[] = [];
  const [first, last] = ends(source);
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    const got = await run();
    ms.push(performance.now() - t0);
    if (got[0] !== first + 1 || got[1] !== last + 1) throw new Error(`${label}: wrong result`);
  }
  return median(ms);
}

/** Revives the worker's result, reads its ends, releases it. */
function takeResult(y: unknown): Ends {
  const result = revive(y) as TransferableArray<Float64Array>;
  const got = ends(result.array);
  result.release();
  return got;
}

async function main(): Promise<void> {
  const pool = startPool();
  const source = Float64Array.from({ length: N }, () => Math.random());
  const child = fork(fileURLToPath(import.meta.url), ['worker'], { serialization: 'advanced' });
  await once(child, 'message');

  const rows: [string, number][] = [];
  rows.push([
    'bare in-process compute',
    await time('bare', () => {
      const y = new Float64Array(N);
      addOne(source, y);
      return ends(y);
    }, source),
  ]);
  rows.push([
    'child.send (advanced serialization)',
    await time('advanced', async () => ends((await roundTrip(child, { kind: 'plain', x: source })).y as Float64Array), source),
  ]);
  rows.push([
    'arraypool, makeTransferable (one copy in)',
    await time('copy-in', async () => {
      const x = makeTransferable(source);
      const { y } = await roundTrip(child, { kind: 'pool', x });
      x.release();
      return takeResult(y);
    }, source),
  ]);
  const zeroCopyInput = empty('float64', N);
  zeroCopyInput.array.set(source);
  rows.push([
    'arraypool, zero copy (input and output made with empty())',
    await time('zero-copy', async () => {
      const { y } = await roundTrip(child, { kind: 'pool', x: zeroCopyInput });
      return takeResult(y);
    }, source),
  ]);
  zeroCopyInput.release();
  child.kill();

  const bare = rows[0]?.[1] ?? 1;
  console.log(`\n${N.toExponential(0)} float64 (${((N * 8) / 1e6).toFixed(0)} MB), add one in a forked worker, median of ${ROUNDS}`);
  console.log(`pool ${pool.name}\n`);
  console.log('| method | time | vs bare |\n| --- | ---: | ---: |');
  for (const [label, ms] of rows) console.log(`| ${label} | ${ms.toFixed(1)} ms | ${(ms / bare).toFixed(2)}x |`);
}

if (process.argv[2] === 'worker') await worker();
else await main();
