#!/usr/bin/env node
/**
 * Issue 12, item 2: a producer streams 1 MiB frames with `await send()` to
 * a forked consumer that sums each frame. How large does the pool get, and
 * how much memory does it keep backed once the stream is over?
 *
 *   - "before": no budget (`maxBytesInFlight: Infinity`), a consumer that
 *     lets garbage collection drop the frames (`autoRelease: false`) and
 *     no punch budget (`warmFreeBytes: Infinity`): the 0.1 behaviour;
 *   - "now": the defaults (64 MiB budget per channel, frames given back when
 *     the handler returns, punch policy by a 256 MiB warm budget).
 *
 * The consumer sums each frame `passes` times (default 4: slower than the
 * producer, as a consumer that computes is). "after" is measured once the
 * consumer has exited and its references were reaped.
 *
 *   node --expose-gc benches/backpressure.mjs [frames=2000] [before|now] [passes=4]
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

import { getPool, onMessage, send, startPool } from '../dist/index.js';

const FRAME_BYTES = 1 << 20;
const MIB = 1 << 20;

if (process.argv[2] === 'consumer') {
  startPool();
  const passes = Number(process.argv[4]);
  let frames = 0;
  let checksum = 0;
  onMessage(
    process,
    (m) => {
      if (m.done) {
        process.send({ frames, checksum });
        return;
      }
      let sum = 0;
      for (let pass = 0; pass < passes; pass++) for (let i = 0; i < m.frame.length; i++) sum += m.frame[i];
      checksum += sum;
      frames++;
    },
    { autoRelease: process.argv[3] === 'auto' },
  );
  process.send('ready');
} else {
  const frames = Number(process.argv[2] ?? 2000);
  const passes = process.argv[4] ?? '4';
  const variant = process.argv[3];
  const run = async (label, { budget, autoRelease }) => {
    startPool({ size: '4G', warmFreeBytes: label === 'before' ? Number.MAX_SAFE_INTEGER : undefined });
    const child = fork(fileURLToPath(import.meta.url), ['consumer', autoRelease ? 'auto' : 'gc', passes], { serialization: 'advanced' });
    await once(child, 'message');
    const pool = getPool();
    let peakUsed = 0;
    let peakBacked = 0;
    const start = process.hrtime.bigint();
    for (let i = 0; i < frames; i++) {
      await send(child, { frame: new Float64Array(FRAME_BYTES / 8).fill(1) }, { maxBytesInFlight: budget });
      const s = pool.stats();
      peakUsed = Math.max(peakUsed, s.usedBytes);
      peakBacked = Math.max(peakBacked, s.backedBytes);
    }
    const answer = once(child, 'message');
    await send(child, { done: true });
    const [{ frames: got }] = await answer;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
    pool.reap();
    const after = pool.stats();
    console.log(
      `${label.padEnd(7)} frames ${got}/${frames}  ${(frames / seconds).toFixed(0)} frames/s  ` +
        `pool peak ${(peakUsed / MIB).toFixed(0)} MiB used, ${(peakBacked / MIB).toFixed(0)} MiB backed; ` +
        `after: ${(after.usedBytes / MIB).toFixed(0)} MiB used, ${(after.backedBytes / MIB).toFixed(0)} MiB backed`,
    );
  };
  if (variant === 'before') await run('before', { budget: Infinity, autoRelease: false });
  else if (variant === 'now') await run('now', { budget: undefined, autoRelease: true });
  else {
    // Each variant in a fresh process, with a pool of its own.
    console.log(`${frames} frames of 1 MiB, await send() to a forked consumer that sums each ${passes} times (node ${process.version})`);
    for (const v of ['before', 'now']) {
      const p = fork(fileURLToPath(import.meta.url), [String(frames), v, passes], { execArgv: ['--expose-gc'] });
      await once(p, 'exit');
    }
  }
}
