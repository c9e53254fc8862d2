// Processes and threads coming and going: what is left of a pool, and when.
// Anonymous (memfd) pools, the default, vanish with their last process,
// however it dies; named ('shm') pools are unlinked by their creator.
import test from 'ava';
import { fork, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

import * as binding from '../binding.cjs';
import { getPool, makeTransferable, revive, startPool } from '../dist/index.js';
import { collectGarbage, spawnChild } from './helpers.mjs';

const OWNER = fileURLToPath(new URL('./fixtures/owner.mjs', import.meta.url));
const THREAD = fileURLToPath(new URL('./fixtures/thread.mjs', import.meta.url));
const CLI = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));

startPool({ size: '64M' });

async function startOwner(extraEnv = {}, backing = 'memfd') {
  const env = { ...process.env, TEST_BACKING: backing, ...extraEnv };
  delete env.ARRAYPOOL_SEGMENT; // its own pool, not ours
  const child = fork(OWNER, [], { env, serialization: 'advanced', stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  const exited = once(child, 'exit');
  const [hello] = await once(child, 'message');
  return { child, exited, ...hello };
}

const segmentExists = (name) => existsSync(`/dev/shm/${name}`);
/** Pids of this user's processes holding the anonymous pool `name` (found through /proc). */
const holders = (name) => binding.listAnonymousPools().find((p) => p.name === name)?.holderPids ?? [];
/**
 * Holders of `name` once no passing inspector holds it too: another test may
 * be running `arraypool ls`, which opens every pool for a moment. Bounded
 * number of looks; nothing here depends on how long anything takes.
 */
async function settledHolders(name, expected) {
  let seen = holders(name);
  for (let i = 0; i < 200 && JSON.stringify(seen) !== JSON.stringify(expected); i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    seen = holders(name);
  }
  return seen;
}

for (const [how, expected] of [
  ['exit', { code: 0, signal: null }],
  ['return', { code: 0, signal: null }],
  ['throw', { code: 1, signal: null }],
]) {
  test(`an anonymous pool is gone with its only process, on ${how}`, async (t) => {
    const owner = await startOwner();
    t.regex(owner.name, /^arraypool-memfd-[0-9a-f]{32}$/);
    t.false(segmentExists(owner.name), 'nothing in /dev/shm');
    t.deepEqual(await settledHolders(owner.name, [owner.child.pid]), [owner.child.pid]);
    t.is(owner.locator, `${owner.name}@${owner.child.pid}:${owner.locator.split(':').pop()}`);
    owner.child.send(how);
    const [code, signal] = await owner.exited;
    t.deepEqual({ code, signal }, expected);
    t.deepEqual(await settledHolders(owner.name, []), []);
  });

  test(`the creator of a named pool unlinks it on ${how}`, async (t) => {
    const owner = await startOwner({}, 'shm');
    t.true(segmentExists(owner.name));
    owner.child.send(how);
    const [code, signal] = await owner.exited;
    t.deepEqual({ code, signal }, expected);
    t.false(segmentExists(owner.name));
  });
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  test(`the creator of a named pool unlinks it on ${signal} and still dies of the signal`, async (t) => {
    const owner = await startOwner({}, 'shm');
    owner.child.send('wait');
    owner.child.kill(signal);
    const [code, got] = await owner.exited;
    t.is(code, null);
    t.is(got, signal);
    t.false(segmentExists(owner.name));
  });
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  test(`a process busy in synchronous code with a pool open dies of ${signal} at once`, async (t) => {
    const child = spawn(process.execPath, [fileURLToPath(new URL('./fixtures/busy.mjs', import.meta.url))], {
      env: { ...process.env, ARRAYPOOL_SEGMENT: '' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = once(child, 'exit');
    const [line] = await once(child.stdout, 'data');
    const ready = JSON.parse(String(line));
    t.deepEqual(ready, { ready: true, SIGINT: 0, SIGTERM: 0 }, 'the library installs no signal listener');
    const sent = performance.now();
    child.kill(signal);
    // The child spins forever: only the signal itself can end it.
    const [code, got] = await exited;
    t.log(`${signal}: dead ${(performance.now() - sent).toFixed(1)} ms after the signal`);
    t.deepEqual({ code, signal: got }, { code: null, signal });
  });
}

for (const signal of ['SIGHUP', 'SIGQUIT', 'SIGUSR2', 'SIGALRM', 'SIGKILL']) {
  test(`creator killed by ${signal}, then its attached child by SIGKILL: nothing of the pool remains`, async (t) => {
    const owner = await startOwner();
    const attached = await spawnChild({ env: { ...process.env, ARRAYPOOL_SEGMENT: owner.locator } });
    try {
      const { stats } = await attached.request('hold', { count: 4, bytes: 1 << 20 });
      t.true(stats.liveBlocks >= 4);
      owner.child.kill(signal);
      const [, got] = await owner.exited;
      t.is(got, signal);
      t.deepEqual(await settledHolders(owner.name, [attached.child.pid]), [attached.child.pid], 'the attached child still holds the pool');
      if (signal === 'SIGKILL') {
        // The CLI finds it through /proc, with its members alive and dead; gc has nothing to do.
        const ls = spawnSync(process.execPath, [CLI, 'ls'], { encoding: 'utf8' }).stdout;
        t.regex(ls, new RegExp(`${owner.name}\\tmemfd\\t.*1 alive / 1 dead\\tin use`));
        // --dry-run: a real gc here would also remove other tests' abandoned named pools.
        const gc = spawnSync(process.execPath, [CLI, 'gc', '--dry-run'], { encoding: 'utf8' }).stdout;
        t.false(gc.includes(owner.name));
        t.regex(gc, /anonymous pool\(s\) in use: nothing to do/);
      }
      attached.child.kill('SIGKILL');
      await attached.exited;
    } finally {
      await attached.stop();
    }
    t.deepEqual(await settledHolders(owner.name, []), [], 'no process holds it: the kernel has freed it');
    t.false(segmentExists(owner.name));
  });
}

test('a grandchild attaches after the creator has exited, through its parent', async (t) => {
  const run = spawnSync(process.execPath, [fileURLToPath(new URL('./fixtures/lineage.mjs', import.meta.url))], {
    env: { ...process.env, ARRAYPOOL_SEGMENT: '' },
    encoding: 'utf8',
  });
  t.is(run.status, 0, run.stderr);
  const result = JSON.parse(run.stdout.trim().split('\n').pop());
  t.is(result.grandchildPool, result.pool, 'the grandchild joined the same pool');
  t.deepEqual(result.grandchildSaw, [100, 2, 3]);
  t.is(result.seenHere, 100, "the middle process sees the grandchild's write");
  t.true(result.locator.startsWith(`${result.pool}@${result.middlePid}:`), 'each member names itself first');
  t.deepEqual(await settledHolders(result.pool, []), []);
});

test('an attached process keeps working after the creator is gone', async (t) => {
  const owner = await startOwner();
  const view = revive(owner.handle); // attaches the owner's pool on demand (found through /proc)
  owner.child.send('exit');
  await owner.exited;
  t.deepEqual(await settledHolders(owner.name, [process.pid]), [process.pid], 'only this process holds it now');
  t.deepEqual(Array.from(view.array), [1, 2, 3], 'the memory is still there');
  view.array[0] = 10;
  t.is(view.array[0], 10);
  view.release();
});

test('an attached process keeps working after the creator of a named pool is gone', async (t) => {
  const owner = await startOwner({}, 'shm');
  const view = revive(owner.handle);
  owner.child.send('exit');
  await owner.exited;
  t.false(segmentExists(owner.name), 'the name is gone');
  t.deepEqual(Array.from(view.array), [1, 2, 3], 'the memory is not');
  view.release();
});

test.serial('worker_threads: a thread writes into the array and answers with a new one', async (t) => {
  const worker = new Worker(THREAD);
  try {
    const x = makeTransferable(new Float64Array([1, 2, 3]));
    worker.postMessage({ x });
    const [{ y }] = await once(worker, 'message');
    const result = revive(y);
    t.is(x.array[0], 123, 'the thread wrote into shared memory');
    t.deepEqual(Array.from(result.array), [246, 4, 6]);
    t.is(getPool().stats().processes, 1, 'threads share their process slot');
    x.release();
    result.release();
  } finally {
    await worker.terminate();
  }
  await collectGarbage();
  t.is(getPool().stats().liveBlocks, 0, "the thread's references went with it");
});

test('ARRAYPOOL_SIZE sets the default pool size', async (t) => {
  const owner = await startOwner({ ARRAYPOOL_SIZE: '32M' });
  t.is(owner.capacity, 32 * 2 ** 20);
  owner.child.send('exit');
  await owner.exited;
});

test('Pool.close() of a named pool unlinks the name at once; the next array starts a fresh pool', async (t) => {
  const owner = await startOwner({}, 'shm');
  owner.child.send('close');
  const [answer] = await once(owner.child, 'message');
  t.false(answer.closedExists);
  t.not(answer.next, owner.name);
  t.is(answer.again, answer.next);
  owner.child.send('exit');
  await owner.exited;
  t.false(segmentExists(answer.next));
});

test.serial("a worker thread's close() ends its own use, not the process's", async (t) => {
  const worker = new Worker(fileURLToPath(new URL('./fixtures/thread-close.mjs', import.meta.url)));
  const [answer] = await once(worker, 'message');
  await worker.terminate();
  t.true(answer.closed);
  t.is(answer.name, getPool().name);
  t.false(getPool().closed);
  const a = makeTransferable(new Uint8Array(8), { transferRequired: false });
  t.is(a.segment, getPool().name, 'the process still uses its pool');
  t.true(holders(a.segment).includes(process.pid));
  a.release();
});

test('a named pool created by a worker thread alone is unlinked when the process exits', async (t) => {
  const env = { ...process.env };
  delete env.ARRAYPOOL_SEGMENT;
  const child = fork(fileURLToPath(new URL('./fixtures/thread-owner.mjs', import.meta.url)), [], { env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const [code] = await once(child, 'close');
  t.is(code, 0, err);
  const name = out.trim();
  t.regex(name, /^arraypool-[0-9a-f]{32}$/);
  t.false(segmentExists(name));
});

test('closing and reopening a pool many times does not use up process slots', async (t) => {
  const script = `
    import { startPool } from ${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)};
    for (let i = 0; i < 100; i++) startPool().close();
    console.log(startPool().stats().processes);
  `;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: process.env, encoding: 'utf8' });
  t.is(run.status, 0, run.stderr);
  t.is(Number(run.stdout.trim()), 2, 'this test process and the child, nothing stale');
});
