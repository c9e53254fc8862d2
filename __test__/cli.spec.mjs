// The `arraypool` CLI (ls, stats, gc) against named pools this file makes
// itself: a pool file truncated and restored under the CLI (it reads with
// pread, never maps, so it never dies of SIGBUS), and what gc removes, keeps
// and refuses. gc only ever runs on names given explicitly (the file's own),
// never on the whole of /dev/shm: other tests' abandoned pools are theirs.
import test from 'ava';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import * as binding from '../binding.cjs';
import { runCli } from './helpers.mjs';

const OWNER = fileURLToPath(new URL('./fixtures/owner.mjs', import.meta.url));
const TRUNCATE_LOOP = fileURLToPath(new URL('./fixtures/truncate-loop.mjs', import.meta.url));
// ARRAYPOOL_TEST_CLI runs these tests against another build of the CLI
// (e.g. an older one, to see the failures they catch).
const CLI = process.env.ARRAYPOOL_TEST_CLI ?? fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
const RUNS = Number(process.env.ARRAYPOOL_CLI_RUNS ?? 60);

const shmPath = (name) => `/dev/shm/${name}`;
const randomName = () => `arraypool-clitest-${process.pid}-${Math.random().toString(36).slice(2, 12)}`;

const cli = (...args) => runCli(CLI, ...args);

/** A named pool (1 MiB by default) owned by a forked process; `kill()` leaves it abandoned. */
async function namedPool(size = '1M') {
  const env = { ...process.env, TEST_BACKING: 'shm', ARRAYPOOL_SIZE: size };
  delete env.ARRAYPOOL_SEGMENT;
  const child = fork(OWNER, [], { env, serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const exited = once(child, 'exit');
  const [hello] = await once(child, 'message');
  return {
    name: hello.name,
    /** SIGKILL: the name stays in /dev/shm with no process. */
    async abandon() {
      child.kill('SIGKILL');
      await exited;
    },
    /** SIGTERM: the creator unlinks its pool and dies. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

async function abandonedPool(size) {
  const pool = await namedPool(size);
  await pool.abandon();
  return pool.name;
}

/** Removes the test's own files, whatever state they are in. */
const cleanup = (...names) => names.forEach((n) => rmSync(shmPath(n), { force: true }));

test('ls and stats never die while a pool file is truncated and restored under them', async (t) => {
  const name = await abandonedPool('64K');
  const looper = fork(TRUNCATE_LOOP, [shmPath(name)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const looperExited = once(looper, 'exit');
  // Its last word: { cycles } after 'stop', or { error } if it failed.
  let last;
  looper.on('message', (m) => (last = m));
  const outcomes = { ls: { runs: 0, signals: 0, pool: 0, problem: 0 }, stats: { runs: 0, signals: 0, pool: 0, problem: 0 } };
  const bad = [];
  try {
    t.deepEqual((await once(looper, 'message'))[0], { ready: true });
    // Two at a time, so the loop keeps cutting while each one runs.
    const one = async (i) => {
      const command = i % 2 === 0 ? 'ls' : 'stats';
      const run = await cli(...(command === 'ls' ? ['ls'] : ['stats', name]));
      const o = outcomes[command];
      o.runs++;
      if (run.signal !== null) {
        o.signals++;
        bad.push(`${command} killed by ${run.signal}`);
        return;
      }
      if (run.code !== 0) {
        bad.push(`${command} exited ${run.code}: ${run.stderr}`);
        return;
      }
      if (command === 'ls') {
        const row = run.stdout.split('\n').find((line) => line.startsWith(`${name}\t`));
        if (!row || !/\tshm\t/.test(row)) bad.push(`ls has no sane row for the pool:\n${run.stdout}`);
        else if (row.includes('invalid: ')) o.problem++;
        else o.pool++;
      } else {
        let s;
        try {
          s = JSON.parse(run.stdout);
        } catch {
          bad.push(`stats printed no JSON:\n${run.stdout}`);
          return;
        }
        if (s.name !== name || typeof s.sizeBytes !== 'number') bad.push(`stats: ${run.stdout}`);
        else if (s.problem) o.problem++;
        else o.pool++;
      }
    };
    for (let i = 0; i < 2 * RUNS; i += 2) await Promise.all([one(i), one(i + 1)]);
  } finally {
    if (looper.connected) looper.send('stop');
    await looperExited;
    t.log(`${last?.cycles} truncate/restore cycles; ls: ${JSON.stringify(outcomes.ls)}; stats: ${JSON.stringify(outcomes.stats)}`);
    cleanup(name);
  }
  t.is(last?.error, undefined, 'the truncate loop ran to the end');
  t.true(last?.cycles > 0);
  t.deepEqual(bad, []);
  t.is(outcomes.ls.signals + outcomes.stats.signals, 0, 'no run died of a signal');
  t.true(outcomes.ls.runs >= 50 && outcomes.stats.runs >= 50);
});

test('gc --dry-run says, one line per segment, exactly what gc would do', async (t) => {
  const live = await namedPool();
  const abandoned = await abandonedPool();
  const foreign = await abandonedPool();
  chmodSync(shmPath(foreign), 0o666);
  const junk = randomName();
  writeFileSync(shmPath(junk), Buffer.alloc(1 << 20, 0x5a), { mode: 0o600 });
  const empty = randomName();
  writeFileSync(shmPath(empty), '', { mode: 0o600 });
  const names = [abandoned, live.name, junk, foreign, empty];
  try {
    const dry = await cli('gc', '--dry-run', ...names);
    t.is(dry.code, 0, dry.stderr);
    const lines = dry.stdout.trim().split('\n');
    t.is(lines.length, names.length + 1, dry.stdout);
    t.regex(lines[0], new RegExp(`^would remove ${abandoned} \\(abandoned: 1 registered process\\(es\\), all dead, 1\\.0 MiB\\)$`));
    t.regex(lines[1], new RegExp(`^keeps ${live.name} \\(1 live process\\(es\\)\\)$`));
    t.regex(lines[2], new RegExp(`^not a pool ${junk} \\(bad magic: .*\\): left alone$`));
    t.regex(lines[3], new RegExp(`^foreign owner or mode ${foreign} \\(owned by uid \\d+ with mode 666; .*\\): left alone$`));
    t.regex(lines[4], new RegExp(`^being created ${empty} \\(empty, \\d+ s old: spared for 60 s\\): left alone$`));
    t.is(lines[5], '1 segment(s) to remove');
    t.true(names.every((n) => existsSync(shmPath(n))), 'a dry run removes nothing');

    // The same through the binding, and what a real run does.
    t.like(binding.gcSegment(abandoned, true), { removable: true, removed: false, kind: 'abandoned' });
    const real = await cli('gc', ...names);
    t.is(real.code, 0, real.stderr);
    const realLines = real.stdout.trim().split('\n');
    t.regex(realLines[0], new RegExp(`^removed ${abandoned} `));
    // The same verdicts for the rest (the empty file's age may have ticked).
    const ageless = (l) => l.replace(/\d+ s old/, 'N s old');
    t.deepEqual(realLines.slice(1, 5).map(ageless), lines.slice(1, 5).map(ageless));
    t.is(realLines[5], '1 segment(s) removed');
    t.false(existsSync(shmPath(abandoned)));
    t.true([live.name, junk, foreign, empty].every((n) => existsSync(shmPath(n))));
  } finally {
    await live.stop();
    cleanup(...names);
  }
});

test('gc refuses a file named like a pool that is not one, and a pool file open to others (0666)', async (t) => {
  const junk = randomName();
  writeFileSync(shmPath(junk), Buffer.alloc(64 << 10, 7), { mode: 0o600 });
  const foreign = await abandonedPool();
  chmodSync(shmPath(foreign), 0o666);
  try {
    for (const args of [['gc', junk, foreign], ['gc', '--dry-run', junk, foreign]]) {
      const run = await cli(...args);
      t.is(run.code, 0, run.stderr);
      t.regex(run.stdout, new RegExp(`^not a pool ${junk} .*: left alone$`, 'm'));
      t.regex(run.stdout, new RegExp(`^foreign owner or mode ${foreign} .*mode 666.*: left alone$`, 'm'));
      t.regex(run.stdout, /^0 segment\(s\) (removed|to remove)$/m);
    }
    t.true(existsSync(shmPath(junk)) && existsSync(shmPath(foreign)));
    // ls and stats refuse to read the foreign one at all.
    const stats = await cli('stats', foreign);
    t.is(stats.code, 1);
    t.regex(stats.stderr, /ERR_INVALID_SEGMENT: .*refused: owned by uid \d+ with mode 666/);
    const ls = await cli('ls');
    t.is(ls.code, 0);
    t.regex(ls.stdout, new RegExp(`^${foreign}\\tshm\\t\\(.*refused`, 'm'));
  } finally {
    cleanup(junk, foreign);
  }
});

test('gc of a given name that is gone, anonymous or malformed', async (t) => {
  const gone = randomName();
  const run = await cli('gc', gone);
  t.is(run.code, 0);
  t.regex(run.stdout, new RegExp(`^gone ${gone} \\(no such segment\\)$`, 'm'));
  const anonymous = await cli('gc', '--dry-run', 'arraypool-memfd-00000000000000000000000000000000');
  t.regex(anonymous.stdout, /^keeps arraypool-memfd-0+ \(anonymous: the kernel frees it/m);
  const bad = await cli('gc', 'not-a-pool-name');
  t.is(bad.code, 1);
  t.regex(bad.stderr, /ERR_INVALID_NAME/);
  const option = await cli('gc', '--force');
  t.is(option.code, 2);
});
