// A Node parent with Python children (the arraypool Python package, built
// into .venv by `npm run python:setup`): handles cross both ways, writes are
// seen without copying, a killed Python member is reaped by Node. The child
// is the Python tests' member (crates/python/tests/fixtures/member.py),
// speaking JSON lines on stdio (README, "Python").
import { fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import * as binding from '../binding.cjs';
import { empty, makeTransferable, revive, startPool } from '../dist/index.js';
import { DTYPE_SAMPLES } from './helpers.mjs';

const PYTHON = fileURLToPath(new URL('../.venv/bin/python', import.meta.url));
const MEMBER = fileURLToPath(new URL('../crates/python/tests/fixtures/member.py', import.meta.url));
// Without python3, or when python:setup could not build the package (it said
// so), the marker is absent and these tests skip; CI requires it.
const READY = fileURLToPath(new URL('../.venv/.arraypool-ready', import.meta.url));
const withPython = existsSync(READY) ? test.serial : test.serial.skip;

const pool = startPool();

/** Spawns the Python member; resolves once it has joined the pool. */
async function pythonMember() {
  const child = spawn(PYTHON, [MEMBER], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exited = once(child, 'exit');
  const read = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`the Python member exited: ${(await exited).join(' ')}`);
    return JSON.parse(value);
  };
  const ready = await read();
  return {
    child,
    ready,
    exited,
    read,
    async request(message) {
      child.stdin.write(`${JSON.stringify(message)}\n`);
      return read();
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
    async stop() {
      child.stdin.end();
      await exited;
    },
  };
}

withPython('a Python child joins the Node parent’s pool', async (t) => {
  const member = await pythonMember();
  t.teardown(() => member.kill());
  t.is(member.ready.segment, pool.name);
  await member.stop();
  t.is(member.child.exitCode, 0);
});

withPython('Python writes into a Node array in place and returns an array made with empty()', async (t) => {
  const member = await pythonMember();
  t.teardown(() => member.kill());
  const x = makeTransferable(Float64Array.from([0, 1, 2, 3, 4, 5]), { shape: [2, 3] });
  const answer = await member.request({ op: 'add_one', input: x.toHandle() });
  t.deepEqual(Array.from(x.array), [1, 2, 3, 4, 5, 6], 'the write is seen in Node’s view');
  const result = revive(answer.result);
  t.is(result.dtype, 'float64');
  t.deepEqual(result.shape, [2, 3]);
  t.deepEqual(Array.from(result.array), [2, 4, 6, 8, 10, 12]);
  x.release();
  result.release();
  await member.stop();
});

withPython('every Node dtype revives in Python, whose handle of it is Node’s', async (t) => {
  const member = await pythonMember();
  t.teardown(() => member.kill());
  for (const [Ctor, sample] of DTYPE_SAMPLES) {
    const source = Ctor === Buffer ? Buffer.from([sample, 1]) : Ctor.of(sample, Ctor === BigInt64Array || Ctor === BigUint64Array ? 1n : 1);
    const x = makeTransferable(source);
    const handle = x.toHandle();
    const answer = await member.request({ op: 'revive_describe', input: handle });
    t.true(answer.ok, `${handle.dtype}: ${JSON.stringify(answer)}`);
    t.deepEqual(answer.handle, handle, `${handle.dtype}: same JSON`);
    t.is(answer.first, String(source[0]), `${handle.dtype}: same first element`);
    x.release();
  }
  await member.stop();
});

withPython('Python refuses stale and forged Node handles with Node’s codes', async (t) => {
  const member = await pythonMember();
  t.teardown(() => member.kill());
  const x = empty('float64', 4, { transferRequired: false });
  const handle = x.toHandle();
  const forged = await member.request({ op: 'revive', input: { ...handle, offset: handle.offset + 1 } });
  t.deepEqual(forged, { ok: false, code: 'ERR_INVALID_HANDLE' });
  x.release();
  t.deepEqual(await member.request({ op: 'revive', input: handle }), { ok: false, code: 'ERR_STALE_HANDLE' });
  await member.stop();
});

withPython('a killed Python member is reaped by Node', async (t) => {
  const member = await pythonMember();
  t.teardown(() => member.kill());
  const base = pool.stats();
  const mine = makeTransferable(Float64Array.of(1, 2, 3), { transferRequired: false });
  t.deepEqual(await member.request({ op: 'hold', input: mine.toHandle(), count: 3 }), { held: 4 });
  t.is(pool.stats().liveBlocks, base.liveBlocks + 4);
  await member.kill();
  const report = pool.reap();
  t.is(report.processes, 1);
  t.is(report.references, 4);
  t.is(report.blocksFreed, 3, 'its own blocks; ours is still viewed here');
  t.is(pool.stats().liveBlocks, base.liveBlocks + 1);
  t.deepEqual(Array.from(mine.array), [1, 2, 3]);
  mine.release();
  t.is(pool.stats().liveBlocks, base.liveBlocks);
});

withPython('a Python thread waiting for the pool lock (or for a thread that waits for it) releases the GIL', async (t) => {
  const member = await pythonMember(); // joined before the lock is held
  t.teardown(() => member.kill());
  // A block for its second thread to ask about (gil_probe), made before the lock is held.
  t.deepEqual(await member.request({ op: 'hold', count: 1, nbytes: 64 }), { held: 1 });
  const holder = fork(fileURLToPath(new URL('./fixtures/lock-holder.mjs', import.meta.url)), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const holderExited = once(holder, 'exit');
  t.teardown(() => holder.kill('SIGKILL'));
  await once(holder, 'message');
  holder.send('go'); // it stops inside an allocation, holding the lock
  for (let i = 0; binding.testLockOwner(pool.id) === null; i++) {
    if (i === 3000) throw new Error('the holder never took the lock');
    await new Promise((r) => setTimeout(r, 10));
  }
  // Answered only once its main thread ran Python while another thread of
  // it was inside the core, waiting for the lock (a held GIL: no answer).
  t.deepEqual(await member.request({ op: 'gil_probe' }), { main_ran_while_waiting: true });
  holder.kill('SIGKILL');
  await holderExited;
  t.deepEqual(
    await member.read(),
    { allocated: true, asked: true },
    'the waiting thread took the lock over from the dead holder; the other then asked about its block',
  );
  await member.stop();
});
