// Processes and threads coming and going: who unlinks what, and when.
import test from 'ava';
import { fork, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

import { getPool, makeTransferable, revive, startPool } from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';

const OWNER = fileURLToPath(new URL('./fixtures/owner.mjs', import.meta.url));
const THREAD = fileURLToPath(new URL('./fixtures/thread.mjs', import.meta.url));

startPool({ size: '64M' });

async function startOwner(extraEnv = {}) {
  const env = { ...process.env, ...extraEnv };
  delete env.ARRAYPOOL_SEGMENT; // its own pool, not ours
  const child = fork(OWNER, [], { env, serialization: 'advanced', stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  const exited = once(child, 'exit');
  const [hello] = await once(child, 'message');
  return { child, exited, ...hello };
}

const segmentExists = (name) => existsSync(`/dev/shm/${name}`);

for (const [how, expected] of [
  ['exit', { code: 0, signal: null }],
  ['return', { code: 0, signal: null }],
  ['throw', { code: 1, signal: null }],
]) {
  test(`the creator unlinks its segment on ${how}`, async (t) => {
    const owner = await startOwner();
    t.true(segmentExists(owner.name));
    owner.child.send(how);
    const [code, signal] = await owner.exited;
    t.deepEqual({ code, signal }, expected);
    t.false(segmentExists(owner.name));
  });
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  test(`the creator unlinks its segment on ${signal} and still dies of the signal`, async (t) => {
    const owner = await startOwner();
    owner.child.send('wait');
    owner.child.kill(signal);
    const [code, got] = await owner.exited;
    t.is(code, null);
    t.is(got, signal);
    t.false(segmentExists(owner.name));
  });
}

test('an attached process keeps working after the creator is gone', async (t) => {
  const owner = await startOwner();
  const view = revive(owner.handle); // attaches the owner's pool on demand
  owner.child.send('exit');
  await owner.exited;
  t.false(segmentExists(owner.name), 'the name is gone');
  t.deepEqual(Array.from(view.array), [1, 2, 3], 'the memory is not');
  view.array[0] = 10;
  t.is(view.array[0], 10);
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

test('Pool.close() unlinks the name at once; the next array starts a fresh pool', async (t) => {
  const owner = await startOwner();
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
  t.true(existsSync(`/dev/shm/${a.segment}`), 'the name is still there');
  a.release();
});

test('a pool created by a worker thread alone is unlinked when the process exits', async (t) => {
  const env = { ...process.env };
  delete env.ARRAYPOOL_SEGMENT;
  const child = fork(fileURLToPath(new URL('./fixtures/thread-owner.mjs', import.meta.url)), [], { env, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const [code] = await once(child, 'exit');
  t.is(code, 0);
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
