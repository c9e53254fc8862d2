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

maybe('using scope = withPool(): what the block made is released, what follows is not', async (t) => {
  const before = await held();
  const { inside, after, scope } = fixture.usingScope();
  t.false(scope.open);
  for (const a of inside) t.is(a.array.length, 0);
  t.is(after.array.length, 8);
  after.release();
  t.is(await held(), before);
});

maybe('await using scope = withPool() across awaits in an async function', async (t) => {
  const before = await held();
  const { inside, after, scope } = await fixture.awaitUsingScope();
  t.false(scope.open);
  for (const a of inside) t.is(a.array.length, 0);
  t.is(after.array.length, 16);
  after.release();
  t.is(await held(), before);
});

test('withPool() without a function opens a scope that release() ends (every line)', async (t) => {
  const { withPool, zeros } = await import('../dist/index.js');
  const before = await held();
  const scope = withPool();
  const a = zeros('float64', 4);
  t.is(scope.size, 1);
  scope.release();
  t.is(a.array.length, 0);
  t.false(scope.open);
  const b = zeros('float64', 4);
  t.is(b.array.length, 4);
  b.release();
  t.is(await held(), before);
});
