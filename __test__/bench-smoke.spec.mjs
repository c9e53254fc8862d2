// Smoke run of the benchmark suite (`npm run bench -- --quick --json`): every
// scenario runs, every competitor reports a number, and nothing is left in
// /dev/shm. The figures themselves are not checked: CI machines are noisy
// and the targets are measured, never asserted.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import test from 'ava';

const RUNNER = fileURLToPath(new URL('../benches/run.mjs', import.meta.url));

test('npm run bench -- --quick runs every scenario and leaves nothing behind', (t) => {
  const run = spawnSync(process.execPath, ['--expose-gc', RUNNER, '--quick', '--json'], {
    encoding: 'utf8',
    timeout: 90_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  t.is(run.status, 0, `bench exited ${run.status ?? run.signal}:\n${run.stderr}`);
  const results = JSON.parse(run.stdout);
  t.is(results.mode, 'quick');
  const ids = results.scenarios.map((s) => s.id);
  for (const id of ['headline', 'copy-in', 'small-64', 'small-1024', 'small-65536', 'handle-latency', 'memory', 'contention', 'channel-throughput']) {
    t.true(ids.includes(id), `scenario ${id} missing`);
  }
  for (const scenario of results.scenarios) {
    t.is(scenario.rows.filter((r) => r.reference).length, 1, `${scenario.id}: one reference row`);
    for (const row of scenario.rows) {
      t.true(Number.isFinite(row.median) && row.median > 0, `${scenario.id}/${row.id}: median ${row.median}`);
      t.true(Number.isFinite(row.ratio) && row.ratio > 0, `${scenario.id}/${row.id}: ratio ${row.ratio}`);
    }
  }
  const headline = results.scenarios.find((s) => s.id === 'headline');
  t.true(headline.rows.some((r) => r.id === 'worker-threads'), 'the headline has its worker_threads row');
  // Scenario 7 streams through the pool: its use stays within the frames in
  // flight (the scenario itself fails a round that ends with the pool fuller).
  const { window } = results.config['channel-throughput'];
  const channel = results.scenarios.find((s) => s.id === 'channel-throughput');
  t.deepEqual(
    channel.rows.map((r) => r.id),
    ['worker-threads-transfer', 'ipc-advanced', 'arraypool-send-process', 'arraypool-send-thread'],
  );
  // In frames of 1 MiB; each frame's block also holds its 64-byte header
  // (LAYOUT.md), which the pool's used bytes count: window + 1 blocks are
  // a little more than window + 1 frames.
  const blockFrames = 1 + 64 / 2 ** 20;
  for (const row of channel.rows.filter((r) => r.id.startsWith('arraypool'))) {
    t.true(
      row.extra.poolPeakFrames >= 1 && row.extra.poolPeakFrames <= (window + 1) * blockFrames,
      `${row.id}: pool peak ${row.extra.poolPeakFrames} frames`,
    );
  }
  t.true(results.targets.length > 0);
  t.regex(run.stderr, /nothing left behind/);
});
