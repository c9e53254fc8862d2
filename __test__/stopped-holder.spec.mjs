// A lock holder stopped with SIGSTOP must not stall anyone's event loop:
// releases (explicit or from finalizers) that find the lock busy are queued
// and done once the holder resumes (issue 11). No assertion is on time: a
// release that waited would wait the whole lock timeout (set to 10 minutes
// here, far beyond the test's timeout); the stall is measured and logged.
import test from 'ava';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as binding from '../binding.cjs';
import { makeTransferable, startPool } from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';

const fixture = fileURLToPath(new URL('./fixtures/stopped-holder.mjs', import.meta.url));
const pool = startPool({ size: '64M', lockTimeoutMs: 600_000 });

async function eventually(done, what, tries = 3000) {
  for (let i = 0; i < tries; i++) {
    if (done()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never happened: ${what}`);
}

/** Largest gap between ticks of a 5 ms interval while `run` runs. */
async function longestStall(run) {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 5);
  try {
    await run();
    await new Promise((r) => setTimeout(r, 20));
  } finally {
    clearInterval(timer);
  }
  return longest;
}

test.serial('a SIGSTOPped lock holder: 50 releases and 200 finalizers are queued, the loop runs, nothing leaks after SIGCONT', async (t) => {
  const baseline = pool.stats().usedBytes;
  const kept = Array.from({ length: 50 }, (_, i) => makeTransferable(new Float64Array(1000).fill(i), { transferRequired: false }));
  let dropped = Array.from({ length: 200 }, () => makeTransferable(new Float64Array(1000), { transferRequired: false }));
  const child = fork(fixture, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = once(child, 'exit');
  await once(child, 'message');
  const holdWhile = join(tmpdir(), `arraypool-hold-${process.pid}-${Date.now()}`);
  writeFileSync(holdWhile, '');
  try {
    const released = once(child, 'message');
    child.send({ holdWhile });
    await eventually(() => binding.testLockOwner(pool.id) !== null, 'the child takes the lock');
    child.kill('SIGSTOP');
    const stall = await longestStall(async () => {
      for (const arr of kept) arr.release();
      dropped = null;
      await collectGarbage();
    });
    t.log(`longest event-loop stall with a stopped lock holder: ${stall.toFixed(1)} ms`);
    t.is(binding.queuedReleases(pool.id), 250, 'every release was queued, none waited for the lock');
    t.not(binding.testLockOwner(pool.id), null, 'the holder still holds the lock');
    child.kill('SIGCONT');
    rmSync(holdWhile);
    await released;
    // The queue is drained by the pool's timer (or the next operation).
    await eventually(() => binding.queuedReleases(pool.id) === 0, 'the queued releases are done');
    t.is(pool.stats().usedBytes, baseline, '0 references leaked');
    t.is(pool.check().violation, null);
  } finally {
    rmSync(holdWhile, { force: true });
    child.kill('SIGCONT');
    child.kill('SIGKILL');
    await exited;
  }
});

test.serial('a lock holder that dies while stopped: the queued releases are done by the takeover', async (t) => {
  const baseline = pool.stats().usedBytes;
  const views = Array.from({ length: 3 }, () => makeTransferable(new Uint8Array(4096), { transferRequired: false }));
  const child = fork(fixture, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = once(child, 'exit');
  await once(child, 'message');
  const holdWhile = join(tmpdir(), `arraypool-hold-${process.pid}-${Date.now()}-2`);
  writeFileSync(holdWhile, '');
  try {
    child.send({ holdWhile });
    await eventually(() => binding.testLockOwner(pool.id) !== null, 'the child takes the lock');
    child.kill('SIGSTOP');
    for (const arr of views) arr.release();
    t.is(binding.queuedReleases(pool.id), 3);
    child.kill('SIGKILL');
    await exited;
    await eventually(() => binding.queuedReleases(pool.id) === 0, 'the queued releases are done');
    t.is(pool.stats().usedBytes, baseline);
    t.is(pool.check().violation, null);
  } finally {
    rmSync(holdWhile, { force: true });
    child.kill('SIGKILL');
  }
});
