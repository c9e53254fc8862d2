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
  for (const id of ['headline', 'copy-in', 'small-64', 'small-1024', 'small-65536', 'handle-latency', 'memory', 'contention']) {
    t.true(ids.includes(id), `scenario ${id} missing`);
  }
  for (const scenario of results.scenarios) {
    t.is(scenario.rows.filter((r) => r.reference).length, 1, `${scenario.id}: one reference row`);
    for (const row of scenario.rows) {
      t.true(Number.isFinite(row.median) && row.median > 0, `${scenario.id}/${row.id}: median ${row.median}`);
      t.true(Number.isFinite(row.ratio) && row.ratio > 0, `${scenario.id}/${row.id}: ratio ${row.ratio}`);
    }
  }
  t.true(results.targets.length > 0);
  t.regex(run.stderr, /nothing left behind/);
});
