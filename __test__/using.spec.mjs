// `using` and `await using` (Node >= 24 has the syntax) with TransferableArray,
// ProcessPool and withPool. The syntax lives in fixtures/using.mjs, imported
// only where it parses; on Node 20 and 22 these tests are skipped.
import test from 'ava';
import { fileURLToPath } from 'node:url';

import { getPool, startPool } from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';

const TASKS = fileURLToPath(new URL('./fixtures/process-pool-tasks.mjs', import.meta.url));
const SUPPORTED = Number(process.versions.node.split('.')[0]) >= 24;
const maybe = SUPPORTED ? test.serial : test.skip;

startPool({ size: '64M' });
const fixture = SUPPORTED ? await import('./fixtures/using.mjs') : undefined;

const held = async () => {
  await collectGarbage();
  return getPool().stats().heldReferences;
};

maybe('using: a TransferableArray is released and detached at the end of its block', async (t) => {
  const before = await held();
  const array = fixture.usingArray();
  t.is(array.array.length, 0);
  t.is(await held(), before);
});

maybe('await using: a ProcessPool is closed at the end of its block', async (t) => {
  const { seen, pids, result } = await fixture.awaitUsingProcessPool(TASKS);
  t.is(pids.length, 2);
  t.deepEqual(Array.from(result.array ?? result), [7, 7, 7, 7]);
  await t.throwsAsync(() => seen.exec('describe', []), { code: 'ERR_PROCESS_POOL_CLOSED' });
  for (const pid of pids) t.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
  result.release?.();
});

maybe('using scope = withPool(): what the block made through the scope is released, nothing else', async (t) => {
  const before = await held();
  const { inside, outside, after, scope } = fixture.usingScope();
  t.false(scope.open);
  t.is(inside.length, 3);
  for (const a of inside) t.is(a.array.length, 0);
  t.is(outside.array.length, 8);
  t.is(after.array.length, 8);
  outside.release();
  after.release();
  t.is(await held(), before);
});

maybe('await using scope = withPool() across awaits; a concurrent task keeps its array', async (t) => {
  const before = await held();
  const { inside, after, concurrent, scope } = await fixture.awaitUsingScope();
  t.false(scope.open);
  for (const a of inside) t.is(a.array.length, 0);
  t.is(concurrent.array.length, 8);
  t.is(after.array.length, 16);
  concurrent.release();
  after.release();
  t.is(await held(), before);
});

test('withPool() without a function: a scope that only what it runs or adopts joins (every line)', async (t) => {
  const { withPool, zeros } = await import('../dist/index.js');
  const before = await held();
  const scope = withPool();
  const a = scope.run(() => zeros('float64', 4));
  const outsider = zeros('float64', 4);
  const adopted = scope.adopt(zeros('float64', 2));
  t.is(scope.size, 2);
  scope.release();
  t.is(a.array.length, 0);
  t.is(adopted.array.length, 0);
  t.is(outsider.array.length, 4);
  t.false(scope.open);
  const late = scope.adopt(zeros('float64', 4));
  t.is(late.array.length, 0, 'adopting into a released scope releases at once');
  outsider.release();
  t.is(await held(), before);
});

test('concurrent withPool() scopes never take each other\'s arrays', async (t) => {
  const { withPool, zeros } = await import('../dist/index.js');
  const before = await held();
  const task = async (n) => {
    const scope = withPool();
    const mine = scope.run(() => zeros('float64', n));
    await new Promise((resolve) => setImmediate(resolve));
    scope.release();
    const kept = zeros('float64', n); // after its own scope ended
    await new Promise((resolve) => setImmediate(resolve));
    return { mine, kept };
  };
  const results = await Promise.all([task(2), task(3), task(4)]);
  for (const { mine, kept } of results) {
    t.is(mine.array.length, 0);
    t.true(kept.array.length > 0);
    kept.release();
  }
  t.is(await held(), before);
});
