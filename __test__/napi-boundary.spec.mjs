// The napi boundary: no Rust panic crosses into Node-API (it would abort
// the process), and the test hooks that can disturb a pool are only in the
// testing addon the suite runs on, never in the shipped one. The panics
// happen in child processes: a panic that got through would kill them, not
// the ava worker.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BINDING = new URL('../binding.cjs', import.meta.url).href;
const PANICS = fileURLToPath(new URL('./fixtures/panics.mjs', import.meta.url));

/** Exports only the testing addon may have: they can disturb a pool. */
const GATED = ['testCompactAttaches', 'testPanic', 'testPanicInRelease', 'testPauseInsideAllocation', 'testPauseInsideAllocationWhile', 'testSwallowedPanics'];
/** Read-only diagnostics, in both addons (see crates/node/src/lib.rs). */
const DIAGNOSTICS = ['testExternalMemory', 'testLockOwner'];

/** Runs fixtures/panics.mjs `scenario` in a child process. */
function panics(scenario) {
  const run = spawnSync(process.execPath, ['--expose-gc', PANICS, scenario], { encoding: 'utf8', timeout: 60_000 });
  const last = run.stdout.trim().split('\n').at(-1) ?? '';
  return { status: run.status, signal: run.signal, stderr: run.stderr, result: last.startsWith('{') ? JSON.parse(last) : null };
}

/** The same child must have lived through it: no abort, exit 0. */
function survived(t, run) {
  t.is(run.signal, null, `the child died of ${run.signal}; its stderr:\n${run.stderr}`);
  t.is(run.status, 0, `its stderr:\n${run.stderr}`);
  t.truthy(run.result, 'it printed its result');
}

test('a panic inside an export is an Error with code ERR_INTERNAL and the panic text; the process carries on', (t) => {
  const run = panics('export');
  survived(t, run);
  const { error, works } = run.result;
  t.true(error.isError);
  t.is(error.code, 'ERR_INTERNAL');
  t.regex(error.message, /panic.*boom: the panic text/);
  t.true(works, 'the binding and the pool still work, check() passes');
});

test('a panic in release(): ArrayPoolError ERR_INTERNAL, the reference is kept and GC releases it later', (t) => {
  const run = panics('release');
  survived(t, run);
  const r = run.result;
  t.is(r.error.name, 'ArrayPoolError');
  t.is(r.error.code, 'ERR_INTERNAL');
  t.regex(r.error.message, /panic injected into a view release/);
  t.is(r.keptAfterPanic, 1, 'the panic came before anything changed: the reference is still held');
  t.true(r.viewIntact, 'the view was not detached');
  t.is(r.violationAfterPanic, null);
  t.is(r.heldAfterGc, 0, "the view's finalizer released it");
  t.true(r.works);
});

test("a panic in a view's finalizer is swallowed and reported once; the references stay held, the process exits 0", (t) => {
  const run = panics('finalizer');
  survived(t, run);
  const r = run.result;
  t.is(r.swallowed, 2);
  t.is(r.keptAfterPanics, 2, 'both references are kept (until close or exit), none half-released');
  t.is(r.violation, null);
  t.is(r.keptLater, 2, 'a later finalizer released its view as usual');
  t.true(r.works);
  const reports = run.stderr.match(/^arraypool: internal error \(a Rust panic\) in a view's finalizer/gm) ?? [];
  t.is(reports.length, 1, `reported once; stderr:\n${run.stderr}`);
});

/** Which addon file binding.cjs loads in a child process, and what it exports. */
function loadedAddon(env) {
  const script = `
    import { createRequire } from 'node:module';
    const esm = await import(${JSON.stringify(BINDING)});
    const require = createRequire(${JSON.stringify(BINDING)});
    const loaded = Object.keys(require.cache).filter((f) => f.endsWith('.node'));
    console.log(JSON.stringify({ loaded, native: Object.keys(require(loaded[0])), esm: Object.keys(esm) }));`;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env, encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`loading binding.cjs failed: ${run.stderr}`);
  return JSON.parse(run.stdout);
}

test('the shipped addon exports none of the test hooks that can disturb a pool; the testing addon exports them all', (t) => {
  const env = { ...process.env };
  delete env.NAPI_RS_NATIVE_LIBRARY_PATH;
  const shipped = loadedAddon(env);
  t.deepEqual(shipped.loaded, [`${ROOT}arraypool.linux-x64-gnu.node`]);
  for (const name of GATED) {
    t.false(shipped.native.includes(name), `the shipped addon exports ${name}`);
    t.false(shipped.esm.includes(name), `the shipped binding.cjs lists ${name}`);
  }
  for (const name of DIAGNOSTICS) t.true(shipped.native.includes(name), name);

  const testing = loadedAddon(process.env);
  t.deepEqual(testing.loaded, [process.env.NAPI_RS_NATIVE_LIBRARY_PATH], 'the suite runs on the testing addon');
  for (const name of [...GATED, ...DIAGNOSTICS]) t.true(testing.native.includes(name), name);
});

test.serial('a bad out array is refused before any block is taken, and a misaligned one is written right', async (t) => {
  const binding = (await import('../binding.cjs')).default;
  const { makeTransferable, readHandle, revive, startPool } = await import('../dist/index.js');
  const pool = startPool();
  const before = pool.stats();
  // A block in flight: its handle left, its maker let go.
  const sent = makeTransferable(new Float64Array(8).fill(3));
  const h = readHandle(JSON.parse(JSON.stringify(sent)));
  sent.release();
  t.is(pool.stats().inFlightBlocks, before.inFlightBlocks + 1);
  for (const out of [new Float64Array(2), new Uint8Array(24), undefined]) {
    for (const call of [binding.attach, binding.attachUnviewed]) {
      t.throws(() => call(pool.id, h.offset, h.generation, 0, 64, out), { code: 'ERR_INVALID_ARG' });
    }
    t.throws(() => binding.allocate(pool.id, 64, true, out), { code: 'ERR_INVALID_ARG' });
  }
  t.is(pool.stats().inFlightBlocks, before.inFlightBlocks + 1, 'still in flight for its receiver');
  t.is(pool.stats().usedBytes > before.usedBytes, true);
  const back = revive(h);
  t.is(back.array[7], 3);
  back.release();
  // A Float64Array at an odd address: over a pool view made at byteOffset 3.
  const bytes = makeTransferable(new Uint8Array(64));
  const out = new Float64Array(3);
  const { offset, generation } = readHandle(bytes); // reading bytes.generation would mark it as sent
  const odd = binding.share(pool.id, offset, generation, 3, 32, out);
  const oddId = out[0];
  const aligned = new Float64Array(4);
  t.true(binding.locateView(bytes.array, aligned));
  const misaligned = new Float64Array(odd, 0, 4);
  t.true(binding.locateView(bytes.array, misaligned));
  t.deepEqual([...misaligned], [...aligned]);
  binding.release(oddId, odd);
  bytes.release();
  t.is(pool.stats().usedBytes, before.usedBytes);
  t.is(pool.stats().inFlightBlocks, before.inFlightBlocks);
});

test.serial('a pool id that is not an integer from 0 to 2^32-1 is refused with ERR_INVALID_ARG (NaN used to read as pool 0)', async (t) => {
  const binding = (await import('../binding.cjs')).default;
  const { makeTransferable, readHandle, startPool } = await import('../dist/index.js');
  const pool = startPool();
  const sent = makeTransferable(new Float64Array(8).fill(5));
  const h = readHandle(sent);
  const before = pool.stats();
  const out = new Float64Array(64);
  const calls = {
    allocate: (id) => binding.allocate(id, 64, true, out),
    allocateCopy: (id) => binding.allocateCopy(id, new Float64Array(8), 64, true, out),
    attach: (id) => binding.attach(id, h.offset, h.generation, 0, 64, out),
    attachUnviewed: (id) => binding.attachUnviewed(id, h.offset, h.generation, 0, 64, out),
    share: (id) => binding.share(id, h.offset, h.generation, 0, 64, out),
    markEscaped: (id) => binding.markEscaped(id, h.offset, h.generation),
    // napi-rs's own conversions (these take a double and check it).
    stats: (id) => binding.stats(id),
    check: (id) => binding.check(id),
    reap: (id) => binding.reap(id),
    flushReleases: (id) => binding.flushReleases(id),
    queuedReleases: (id) => binding.queuedReleases(id),
    closePool: (id) => binding.closePool(id),
    poolName: (id) => binding.poolName(id),
    poolLocator: (id) => binding.poolLocator(id, undefined),
    poolBacking: (id) => binding.poolBacking(id),
    isCreator: (id) => binding.isCreator(id),
    poolBlocks: (id) => binding.poolBlocks(id, 10),
    blockOutstanding: (id) => binding.blockOutstanding(id, h.offset, h.generation),
    blockEscaped: (id) => binding.blockEscaped(id, h.offset, h.generation),
    testLockOwner: (id) => binding.testLockOwner(id),
  };
  for (const [name, call] of Object.entries(calls)) {
    for (const id of [Number.NaN, pool.id + 0.5, -1, 2 ** 32, 2 ** 32 + pool.id, Infinity, -Infinity]) {
      const e = t.throws(() => call(id), { code: 'ERR_INVALID_ARG' }, `${name}(${id})`);
      t.regex(e.message, /poolId must be an integer from 0 to 4294967295/);
    }
    t.throws(() => call(String(pool.id)), { code: 'NumberExpected' }, `${name}: a string is not a number`);
  }
  t.deepEqual(pool.stats(), before, 'nothing was allocated, attached or marked');
  // The pool's own id still works (as -0 if it is 0).
  const view = binding.attach(pool.id === 0 ? -0 : pool.id, h.offset, h.generation, 0, 64, out);
  t.is(new Float64Array(view)[7], 5);
  binding.release(out[0], view);
  sent.release();
});

test.serial('allocateCopy of a detached source says it is detached (not "must be a typed array"), before any block is taken', async (t) => {
  const binding = (await import('../binding.cjs')).default;
  const { startPool } = await import('../dist/index.js');
  const pool = startPool();
  const before = pool.stats();
  const out = new Float64Array(3);
  const source = new Float64Array(8).fill(1);
  structuredClone(source.buffer, { transfer: [source.buffer] });
  t.is(source.length, 0, 'detached');
  const e = t.throws(() => binding.allocateCopy(pool.id, source, 64, true, out), { code: 'ERR_INVALID_ARG' });
  t.regex(e.message, /source's ArrayBuffer is detached/);
  const sub = new Uint8Array(new ArrayBuffer(16), 4, 8);
  structuredClone(sub.buffer, { transfer: [sub.buffer] });
  t.throws(() => binding.allocateCopy(pool.id, sub, 8, true, out), { code: 'ERR_INVALID_ARG', message: /detached/ });
  // The other reasons keep their words.
  for (const notTyped of [new DataView(new ArrayBuffer(8)), new ArrayBuffer(8), {}, undefined]) {
    t.throws(() => binding.allocateCopy(pool.id, notTyped, 8, true, out), { code: 'ERR_INVALID_ARG', message: 'source must be a typed array' });
  }
  t.throws(() => binding.allocateCopy(pool.id, new Float64Array(0), 0, true, out), { code: 'ERR_INVALID_ARG', message: /empty/ });
  if (typeof Float16Array === 'function') {
    // Node >= 24: a typed array of a kind no dtype holds is not "empty".
    t.throws(() => binding.allocateCopy(pool.id, new Float16Array(8), 16, true, out), { code: 'ERR_INVALID_ARG', message: /kind no pool dtype holds/ });
  }
  t.deepEqual(pool.stats(), before, 'no block was taken');
});
