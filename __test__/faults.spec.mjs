// Faults and hostile input with real processes: killed lock holders, killed
// reference holders, a kill storm, a killed owner and the CLI, a full
// /dev/shm, permissions. Every wait is bounded; no assertion is on time.
import test from 'ava';
import { execFileSync, fork, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, chownSync, existsSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import * as binding from '../binding.cjs';
import { ArrayPoolError, getPool, makeTransferable, revive, startPool } from '../dist/index.js';
import { spawnChild } from './helpers.mjs';

const fixture = (name) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const CLI = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
const pool = startPool({ size: '256M' });

/** Polls `done()` with a bounded number of tries (a hang fails, nothing else depends on time). */
async function eventually(done, what, tries = 3000) {
  for (let i = 0; i < tries; i++) {
    if (done()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never happened: ${what}`);
}

test.serial('lock holder SIGKILLed inside the critical section: the pool continues and check() passes', async (t) => {
  const child = fork(fixture('lock-holder.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  await once(child, 'message');
  const before = pool.stats();
  child.send('go');
  await eventually(() => binding.testLockOwner(pool.id) !== null, 'the child takes the lock');
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
  const killedAt = performance.now();
  const a = makeTransferable(new Uint8Array(64), { transferRequired: false });
  t.log(`recovered ${(performance.now() - killedAt).toFixed(1)} ms after the lock holder died`);
  const after = pool.stats();
  t.is(after.lockTakeovers, before.lockTakeovers + 1);
  t.is(after.processes, 1, 'the dead child was reaped on takeover');
  t.is(pool.check().violation, null, 'its half-done allocation was rolled back');
  a.release();
  t.is(pool.stats().usedBytes, before.usedBytes);
});

test.serial('reference holder SIGKILLed holding 100 blocks: reaped automatically, the parent blocks intact', async (t) => {
  const baseline = pool.stats().usedBytes;
  const mine = Array.from({ length: 10 }, (_, i) => makeTransferable(new Uint8Array(5000).fill(i), { transferRequired: false }));
  const withMine = pool.stats().usedBytes;
  const c = await spawnChild();
  for (const arr of mine.slice(0, 5)) await c.request('write', { arr, index: 0, value: 200 });
  await c.request('hold', { count: 100, bytes: 3000 });
  t.true(pool.stats().usedBytes > withMine);
  c.child.kill('SIGKILL');
  await c.exited;
  // No explicit reap: allocating notices the dead peer (at least once a second).
  await eventually(() => {
    makeTransferable(new Uint8Array(1), { transferRequired: false }).release();
    return pool.stats().usedBytes === withMine;
  }, 'automatic reaping');
  t.is(pool.stats().usedBytes, withMine, 'back to the baseline plus the parent blocks');
  mine.forEach((arr, i) => t.is(arr.array[1], i, `parent block ${i} intact`));
  t.is(pool.reap().processes, 0, 'nothing left to reap');
  for (const arr of mine) arr.release();
  t.is(pool.stats().usedBytes, baseline);
  t.is(pool.check().violation, null);
});

test.serial('explicit pool.reap() after a SIGKILL returns the used bytes to the baseline', async (t) => {
  const baseline = pool.stats().usedBytes;
  const c = await spawnChild();
  await c.request('hold', { count: 50, bytes: 10000 });
  c.child.kill('SIGKILL');
  await c.exited;
  const report = pool.reap();
  t.is(report.processes, 1);
  t.is(report.blocksFreed, 50);
  t.is(pool.stats().usedBytes, baseline);
});

test.serial('kill storm: workers SIGKILLed and respawned at random, no hang, no leak, check() passes', async (t) => {
  const soakSeconds = Number(process.env.SOAK_SECONDS ?? 0);
  // A soak outlasts ava's 2m timeout: give it the soak plus the usual margin.
  if (soakSeconds > 0) t.timeout((soakSeconds + 120) * 1000);
  const baseline = pool.stats().usedBytes;
  const shared = Array.from({ length: 8 }, (_, i) => {
    const byte = 30 + i;
    return { arr: makeTransferable(new Uint8Array(4096 + i * 100).fill(byte), { transferRequired: false }), byte };
  });
  const env = { ...process.env, STORM_HANDLES: JSON.stringify(shared.map(({ arr, byte }) => ({ handle: arr.toHandle(), byte }))) };
  let ops = 0;
  let kills = 0;
  const corrupted = [];
  const spawnWorker = async () => {
    const w = fork(fixture('storm-worker.mjs'), [], { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let last = 0;
    w.on('message', (m) => {
      if (m.ops) {
        ops += m.ops - last;
        last = m.ops;
      }
    });
    w.on('exit', (code) => code === 3 && corrupted.push(w.pid));
    await once(w, 'message');
    return w;
  };
  const workers = [await spawnWorker(), await spawnWorker()];
  let seed = 7;
  const rng = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const deadline = Date.now() + soakSeconds * 1000;
  while (kills < 50 || Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5 + rng() * 40));
    const i = Math.floor(rng() * workers.length);
    const exited = once(workers[i], 'exit');
    workers[i].kill('SIGKILL');
    await exited;
    kills++;
    workers[i] = await spawnWorker();
    // The parent keeps allocating too (lock takeovers and sweeps happen here).
    makeTransferable(new Uint8Array(100), { transferRequired: false }).release();
  }
  for (const w of workers) {
    const exited = once(w, 'exit');
    w.kill('SIGKILL');
    await exited;
  }
  const reaped = pool.reap();
  const leaked = pool.stats().usedBytes - baseline - shared.reduce((n, s) => n + Math.ceil((s.arr.byteLength + 64) / 64) * 64, 0);
  t.log(`kill storm: ${ops} operations, ${kills + 2} kills, ${reaped.processes} processes reaped at the end, ${leaked} bytes leaked, ${pool.stats().lockTakeovers} lock takeovers in all`);
  t.deepEqual(corrupted, [], 'no worker ever read wrong data');
  t.true(ops > 0);
  t.is(leaked, 0);
  t.is(pool.check().violation, null);
  shared.forEach(({ arr, byte }) => t.is(arr.array[100], byte));
  for (const { arr } of shared) arr.release();
  t.is(pool.stats().usedBytes, baseline);
});

test.serial('named pool, owner SIGKILLed: attached children keep working; gc removes the segment only once all are dead', async (t) => {
  const env = { ...process.env };
  delete env.ARRAYPOOL_SEGMENT;
  env.TEST_BACKING = 'shm';
  const owner = fork(fixture('owner.mjs'), [], { env, serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const [{ name }] = await once(owner, 'message');
  const attached = await spawnChild({ env: { ...process.env, ARRAYPOOL_SEGMENT: name } });
  try {
    const ownerExit = once(owner, 'exit');
    owner.kill('SIGKILL');
    await ownerExit;
    t.true(existsSync(`/dev/shm/${name}`), 'a SIGKILLed owner leaves its name');
    const { stats } = await attached.request('hold', { count: 3, bytes: 1000 });
    t.is(stats.liveBlocks >= 3, true, 'the attached child keeps allocating');
    const ls = execFileSync(process.execPath, [CLI, 'ls'], { encoding: 'utf8' });
    t.regex(ls, new RegExp(`${name}.*1 alive / 1 dead.*in use`));
    // gc is given this test's name only: other specs' pools are not ours to remove.
    const gc1 = execFileSync(process.execPath, [CLI, 'gc', name], { encoding: 'utf8' });
    t.false(gc1.includes(`removed ${name}`), 'never removes a segment with a live process');
    t.true(gc1.includes(`keeps ${name}`), gc1);
    t.true(existsSync(`/dev/shm/${name}`));
    const info = JSON.parse(execFileSync(process.execPath, [CLI, 'stats', name], { encoding: 'utf8' }));
    t.is(info.name, name);
    t.is(info.processes.filter((p) => p.alive).length, 1);
  } finally {
    await attached.stop(); // leaves cleanly; it is not the creator, so it does not unlink
  }
  t.true(existsSync(`/dev/shm/${name}`));
  const gc2 = execFileSync(process.execPath, [CLI, 'gc', name], { encoding: 'utf8' });
  t.true(gc2.includes(`removed ${name}`), gc2);
  t.false(existsSync(`/dev/shm/${name}`));
});

test('100k forged handles: each a typed error, never a crash or a read outside the segment', (t) => {
  const live = makeTransferable(new Float64Array(16).fill(2), { transferRequired: false });
  const base = live.toHandle();
  const { capacityBytes } = pool.stats();
  let seed = 99;
  const rng = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const pick = (xs) => xs[Math.floor(rng() * xs.length)];
  const weird = [0, -1, -64, 2 ** 53, 2 ** 64, NaN, Infinity, 0.5, '64', null, undefined, {}, [], true, 10n];
  const codes = {};
  let accepted = 0;
  let untyped = 0;
  for (let i = 0; i < 100_000; i++) {
    const h = { ...base };
    const field = pick(['offset', 'generation', 'byteOffset', 'byteLength', 'segment', 'dtype', 'shape', 'all']);
    const num = () => (rng() < 0.3 ? pick(weird) : Math.floor((rng() * capacityBytes) / 64) * 64);
    if (field === 'segment') h.segment = pick(['../../etc/passwd', '/dev/shm/x', 'arraypool-' + 'f'.repeat(32), `${base.segment}/..`, '', 7]);
    else if (field === 'dtype') h.dtype = pick(['float128', '', null, 3]);
    else if (field === 'shape') h.shape = pick([[-1], [1e300], 'x', [16, 16], [2 ** 60]]);
    else if (field === 'all') Object.assign(h, { offset: num(), generation: num(), byteOffset: num(), byteLength: num() });
    else h[field] = num();
    try {
      revive(h).release();
      accepted++;
    } catch (e) {
      if (!(e instanceof ArrayPoolError)) untyped++;
      else codes[e.code] = (codes[e.code] ?? 0) + 1;
    }
  }
  t.log(`100k forged handles: ${JSON.stringify(codes)}; accepted (valid by chance) ${accepted}`);
  t.is(untyped, 0);
  t.deepEqual(Object.keys(codes).sort(), ['ERR_INVALID_HANDLE', 'ERR_SEGMENT_NOT_FOUND', 'ERR_STALE_HANDLE']);
  t.is(pool.check().violation, null);
  t.deepEqual(Array.from(live.array), new Array(16).fill(2));
  live.release();
});

test('full /dev/shm: ERR_NO_SPACE instead of SIGBUS, and the pool keeps serving smaller requests', (t) => {
  // A private mount namespace with a 16 MiB tmpfs on /dev/shm (root only).
  const script = `mount -t tmpfs -o size=16m tmpfs /dev/shm && exec "${process.execPath}" "$0"`;
  const run = spawnSync('unshare', ['-m', '--', 'sh', '-c', script, fixture('small-shm.mjs')], { encoding: 'utf8' });
  t.is(run.status, 0, run.stderr);
  t.is(run.signal, null, 'no SIGBUS');
  const result = JSON.parse(run.stdout.trim().split('\n').pop());
  t.is(result.big, 'ERR_NO_SPACE');
  t.is(result.small, 9);
  t.is(result.violation, null);
});

/** Tries to read `path` as uid 65534. A shell, not Node, opens it: the Node
 * under test may live where another uid cannot run it (a cache under /root). */
function readAsNobody(path) {
  return spawnSync('/bin/sh', ['-c', 'if cat "$0" >/dev/null; then echo OPENED; else echo DENIED; fi', path], {
    uid: 65534,
    gid: 65534,
    encoding: 'utf8',
    env: { ...process.env, LC_ALL: 'C' },
  });
}

test('permissions of a named pool: 0600, 128 random bits in the name, another uid cannot open it', (t) => {
  const id = binding.createPool({ backing: 'shm', capacity: 4 * 2 ** 20 });
  try {
    const name = binding.poolName(id);
    t.regex(name, /^arraypool-[0-9a-f]{32}$/);
    const path = `/dev/shm/${name}`;
    t.is(statSync(path).mode & 0o777, 0o600);
    t.is(process.getuid(), 0, 'these tests run as root (CI does), so they can drop privileges');
    const probe = readAsNobody(path);
    t.is(probe.stdout.trim(), 'DENIED');
    t.regex(probe.stderr, /Permission denied/);
  } finally {
    binding.closePool(id);
  }
});

test("a named pool file planted by another uid, open to all, is refused by members and the CLI", (t) => {
  const id = binding.createPool({ backing: 'shm', capacity: 4 * 2 ** 20 });
  const name = binding.poolName(id);
  const path = `/dev/shm/${name}`;
  try {
    // Stands for a valid pool file another user planted under a pool's name.
    chownSync(path, 65534, 65534);
    chmodSync(path, 0o666);
    const script = `import(${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)}).then((m) => {
      try { m.startPool({ name: ${JSON.stringify(name)} }); console.log('JOINED'); } catch (e) { console.log(e.code + ' ' + e.message); }
    })`;
    const joiner = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ARRAYPOOL_SEGMENT: '' } });
    t.regex(joiner.stdout, /^ERR_INVALID_SEGMENT .*owned by uid 65534 with mode 666/);
    const stats = spawnSync(process.execPath, [CLI, 'stats', name], { encoding: 'utf8' });
    t.is(stats.status, 1);
    t.regex(stats.stderr, /ERR_INVALID_SEGMENT/);
  } finally {
    chownSync(path, 0, 0);
    chmodSync(path, 0o600);
    binding.closePool(id);
  }
  t.false(existsSync(path));
});

test('permissions of an anonymous pool: another uid can neither open it through /proc nor list it', (t) => {
  t.regex(pool.name, /^arraypool-memfd-[0-9a-f]{32}$/);
  const [, pid, fd] = /@(\d+):(\d+)/.exec(pool.locator());
  t.is(Number(pid), process.pid);
  const path = `/proc/${pid}/fd/${fd}`;
  t.true(statSync(path).isFile(), 'this process can');
  const probe = readAsNobody(path);
  t.is(probe.stdout.trim(), 'DENIED');
  t.regex(probe.stderr, /Permission denied/);
  const ls = spawnSync(process.execPath, [CLI, 'ls'], { encoding: 'utf8' });
  t.true(ls.stdout.includes(pool.name), ls.stdout);
  // Another uid given the locator gets an error, not a silent pool of its own.
  const script = `import(${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)}).then((m) => {
    try { m.startPool(); console.log('STARTED ' + m.getPool().name); } catch (e) { console.log('ERROR ' + e.code); }
  })`;
  const nobody = spawnSync(process.execPath, ['-e', script], {
    uid: 65534,
    gid: 65534,
    encoding: 'utf8',
    env: { ...process.env, ARRAYPOOL_SEGMENT: pool.locator() },
  });
  if (nobody.error?.code === 'EACCES' || /EACCES|permission denied/i.test(nobody.stderr ?? '')) {
    t.log(`uid 65534 cannot run ${process.execPath} or read the package here: the cross-user attach was not tried`);
  } else {
    t.is(nobody.stdout.trim(), 'ERROR ERR_OS', nobody.stderr);
  }
});

test("Docker's 64 MiB /dev/shm: an anonymous pool carries a 256 MiB array to a child; a named one says what to do", (t) => {
  // A private mount namespace with a 64 MiB tmpfs on /dev/shm (root only).
  const script = `mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "${process.execPath}" "$0" "$1"`;
  const run = (backing) => {
    const r = spawnSync('unshare', ['-m', '--', 'sh', '-c', script, fixture('docker-shm.mjs'), backing], {
      encoding: 'utf8',
      env: { ...process.env, ARRAYPOOL_SEGMENT: '' },
    });
    t.is(r.status, 0, r.stderr);
    t.is(r.signal, null, 'no SIGBUS');
    return JSON.parse(r.stdout.trim().split('\n').pop());
  };
  const anonymous = run('memfd');
  t.is(anonymous.code, undefined, anonymous.message);
  t.is(anonymous.first, 7);
  t.is(anonymous.last, 42);
  const named = run('shm');
  t.is(named.code, 'ERR_POOL_FULL');
  t.regex(named.message, /\/dev\/shm/);
  t.regex(named.message, /memfd|--shm-size/);
});
