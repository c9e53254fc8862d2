// Thousands of views, small and over 64 MiB, made, revived, dropped and
// collected in two real processes that then exit with views alive: on every
// Node line (npm run test:node-lines) this must neither abort in V8 nor
// leave anything in /dev/shm. Also: views leave V8's external-memory counter
// exactly as V8 counts them (arraypool adjusts nothing).
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import * as binding from '../binding.cjs';
import { empty } from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';

const run = promisify(execFile);
const FIXTURE = fileURLToPath(new URL('./fixtures/stress-views.mjs', import.meta.url));

test.serial('thousands of views in two processes: both exit 0 with views alive, nothing left in /dev/shm', async (t) => {
  const { stdout } = await run(process.execPath, ['--expose-gc', FIXTURE], { maxBuffer: 1 << 20 }).catch((error) => {
    throw new Error(`stress run failed (exit ${error.code ?? error.signal}): ${error.stderr}`);
  });
  const counts = JSON.parse(stdout.trim().split('\n').at(-1));
  t.deepEqual(counts.child, { code: 0, signal: null });
  t.is(counts.check, null);
  t.true(counts.views >= 8000, `views made and checked: ${counts.views}`);
  t.regex(counts.segment, /^arraypool-/);
  t.false(existsSync(`/dev/shm/${counts.segment}`), 'nothing in /dev/shm');
  // Bounded looks: another test's `arraypool ls` may hold every pool for a moment.
  const held = () => binding.listAnonymousPools().some((p) => p.name === counts.segment);
  for (let i = 0; i < 200 && held(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  t.false(held(), 'no process holds the pool of both processes any more');
});

test.serial('a view adds its length to V8 external memory, and release takes exactly that off', async (t) => {
  // arraypool 0.1 took each view's length off V8's counter, and Node 24/26
  // abort when V8 later takes it off itself. Nothing may be taken off now.
  const length = 96 * 2 ** 20;
  empty('uint8', 8).release(); // the pool is started and warm
  await collectGarbage();
  const before = binding.testExternalMemory();
  const view = empty('uint8', length, { transferRequired: false });
  const withView = binding.testExternalMemory();
  // Slack for a GC that may sweep other buffers in between (never 90 MiB of them).
  t.true(withView - before >= length - 6 * 2 ** 20, `counter rose by ${withView - before}, the view has ${length} bytes`);
  view.release();
  const after = binding.testExternalMemory();
  t.true(after - before <= 65536, `counter after release: ${after - before} above before`);
  t.true(after >= 0);
});
