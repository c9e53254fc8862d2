// `pool.blocks()` and `arraypool blocks <name>`: what is in a pool, block by
// block, with real processes. The file's pool is a named 'shm' pool (so the
// CLI can read it by name), closed (and so unlinked) at the end; the corrupt
// header test uses a named pool of its own, owned by a forked process.
import test from 'ava';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, openSync, rmSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { ArrayPoolError, makeTransferable, readHandle, revive, startPool } from '../dist/index.js';
import { runCli, spawnChild } from './helpers.mjs';

const CLI = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
const OWNER = fileURLToPath(new URL('./fixtures/owner.mjs', import.meta.url));
const shmPath = (name) => `/dev/shm/${name}`;

const cli = (...args) => runCli(CLI, ...args);

const pool = startPool({ backing: 'shm', size: '4M' });
test.after.always(() => {
  pool.close();
  rmSync(shmPath(pool.name), { force: true });
});

test.serial('pool.blocks() and `arraypool blocks --json` show held and in-flight blocks; a dead child’s go at reap', async (t) => {
  t.is(pool.blocks().totalBlocks, 0);
  const a = makeTransferable(new Float64Array(1000)); // transfer required (the default)
  const b = makeTransferable(new Uint8Array(100), { transferRequired: false });
  const child = await spawnChild();
  try {
    const pid = child.child.pid;
    t.falsy((await child.request('hold', { count: 3, bytes: 4096 })).error);
    // The child sends one array and drops it unrevived: in flight.
    const sent = child.message('result');
    t.falsy((await child.request('result', { length: 16 })).error);
    const r = readHandle((await sent).r); // the compact form, read

    const list = pool.blocks();
    t.is(list.totalBlocks, 6);
    t.is(list.inFlightBlocks, 1);
    t.is(list.omitted, 0);
    t.is(list.totalBytes, list.blocks.reduce((sum, x) => sum + x.size, 0));
    const at = (offset) => list.blocks.find((x) => x.offset === offset);
    const mine = { pid: process.pid, alive: true };
    const ba = at(a.toHandle().offset);
    t.like(ba, { dataLen: 8000, transferRequired: true, transferred: false, inFlight: false, releasing: false });
    t.like(ba.holders, [mine]);
    t.is(ba.holders.length, 1);
    t.like(at(b.toHandle().offset), { dataLen: 100, transferRequired: false, transferred: false, inFlight: false, holders: [mine] });
    const held = list.blocks.filter((x) => x.holders.some((h) => h.pid === pid));
    t.is(held.length, 3);
    for (const x of held) t.like(x, { dataLen: 4096, inFlight: false, holders: [{ pid, alive: true }] });
    const flying = at(r.offset);
    t.like(flying, { dataLen: 128, generation: r.generation, transferRequired: true, transferred: false, inFlight: true, holders: [], age: 0 });
    t.true(ba.age > at(b.toHandle().offset).age, 'a was allocated before b');
    t.true(held.every((x) => x.age > flying.age && x.age < ba.age));
    for (const x of list.blocks) t.is(x.age, list.nextGeneration - 1 - x.generation);

    // From outside (pread, no join): the same blocks.
    const json = await cli('blocks', pool.name, '--json');
    t.is(json.code, 0, json.stderr);
    const outside = JSON.parse(json.stdout);
    t.is(outside.problem, null);
    t.is(outside.name, pool.name);
    t.deepEqual(outside.blocks, list.blocks);
    t.like(outside, { totalBlocks: 6, inFlightBlocks: 1, omitted: 0, nextGeneration: list.nextGeneration });
    const table = await cli('blocks', pool.name);
    t.is(table.code, 0, table.stderr);
    t.regex(table.stdout, /6 used block\(s\).*1 in flight/);
    t.regex(table.stdout, new RegExp(`^${r.offset}\\t.*\\tin flight\\tnot transferred\\t-$`, 'm'));
    t.regex(table.stdout, new RegExp(`pid ${pid} \\(slot \\d+\\)`));

    // Bounded: the first blocks by offset, the rest counted.
    const one = pool.blocks({ limit: 1 });
    t.deepEqual(one.blocks, list.blocks.slice(0, 1));
    t.like(one, { totalBlocks: 6, omitted: 5 });
    const limited = JSON.parse((await cli('blocks', pool.name, '--json', '--limit', '2')).stdout);
    t.like(limited, { totalBlocks: 6, omitted: 4 });
    t.is(limited.blocks.length, 2);
    t.throws(() => pool.blocks({ limit: -1 }), { instanceOf: ArrayPoolError, code: 'ERR_INVALID_ARG' });

    // The child dies holding its three blocks: dead holders until a reap frees them.
    child.child.kill('SIGKILL');
    await child.exited;
    const dead = pool.blocks().blocks.filter((x) => x.holders.some((h) => h.pid === pid));
    t.is(dead.length, 3);
    for (const x of dead) t.false(x.holders[0].alive);
    t.is(pool.reap().blocksFreed, 3);
    const after = pool.blocks();
    t.deepEqual(
      after.blocks.map((x) => x.offset).sort((p, q) => p - q),
      [a.toHandle().offset, b.toHandle().offset, r.offset].sort((p, q) => p - q),
    );
    // The one it had sent stays in flight for its receiver (LAYOUT.md §9) until revived and released.
    t.true(after.blocks.find((x) => x.offset === r.offset).inFlight);
    const received = revive({ r }).r;
    t.like(pool.blocks().blocks.find((x) => x.offset === r.offset), { transferred: true, inFlight: false, holders: [mine] });
    received.release();
    // `a` never left this process: revive its own handle so that it counts as handed over, and
    // is freed on release whatever the rule for never-sent arrays (issue 12, item 3).
    revive({ h: a.toHandle() }).h.release();
    t.like(pool.blocks().blocks.find((x) => x.offset === a.toHandle().offset), { transferred: true });
    a.release();
    b.release();
    // What is left is this process's small-block cache (LAYOUT.md §9.1): listed as cached, not used.
    const left = pool.blocks();
    t.like(left, { inFlightBlocks: 0, cachedBlocks: left.totalBlocks });
    t.true(left.blocks.every((x) => x.cached && x.holders.length === 1 && x.holders[0].pid === process.pid));
    t.like(pool.stats(), { usedBytes: 0, liveBlocks: 0, cachedBlocks: left.totalBlocks });
  } finally {
    await child.stop();
  }
});

test.serial('`arraypool blocks` reports a pool whose block header is corrupt, and never crashes', async (t) => {
  const env = { ...process.env, TEST_BACKING: 'shm', ARRAYPOOL_SIZE: '1M' };
  delete env.ARRAYPOOL_SEGMENT;
  const owner = fork(OWNER, [], { env, serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const exited = once(owner, 'exit');
  const [hello] = await once(owner, 'message');
  const name = hello.name;
  try {
    const before = await cli('blocks', name, '--json');
    t.is(before.code, 0, before.stderr);
    const intact = JSON.parse(before.stdout);
    t.is(intact.totalBlocks, 1);
    const { offset, size } = intact.blocks[0];
    t.is(offset, hello.handle.offset);

    const fd = openSync(shmPath(name), 'r+');
    const word = Buffer.alloc(8);
    try {
      for (const bad of [0n, 65n, 2n ** 64n - 64n, BigInt(size) + 64n]) {
        word.writeBigUInt64LE(bad);
        writeSync(fd, word, 0, 8, offset);
        const json = await cli('blocks', name, '--json');
        t.is(json.signal, null, `size ${bad}`);
        t.is(json.code, 1, `size ${bad}: ${json.stderr}`);
        const report = JSON.parse(json.stdout);
        t.regex(report.problem, /size|prev_phys/, `size ${bad}`);
        t.deepEqual(report.blocks, [], 'a block whose size is not confirmed is not listed');
        const table = await cli('blocks', name);
        t.is(table.code, 1);
        t.regex(table.stderr, /arraypool blocks: .*problem: /);
      }
      // The real size back: the walk is whole again.
      word.writeBigUInt64LE(BigInt(size));
      writeSync(fd, word, 0, 8, offset);
    } finally {
      closeSync(fd);
    }
    const restored = JSON.parse((await cli('blocks', name, '--json')).stdout);
    t.is(restored.problem, null);
    t.is(restored.totalBlocks, 1);
  } finally {
    if (owner.exitCode === null && owner.signalCode === null) owner.kill('SIGTERM');
    await exited;
    t.false(existsSync(shmPath(name)), 'the owner unlinked its pool');
    rmSync(shmPath(name), { force: true });
  }
});

test.serial('`arraypool blocks` on a name that is not a pool says so', async (t) => {
  const missing = await cli('blocks', `arraypool-blockstest-${process.pid}-missing`);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /ERR_SEGMENT_NOT_FOUND/);
  const usage = await cli('blocks');
  t.is(usage.code, 2);
});
