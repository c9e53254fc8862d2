#!/usr/bin/env node
/**
 * What a test run leaves behind, counting only what appeared during the run
 * (other users of arraypool on the machine are left out):
 * - named segments in /dev/shm (`arraypool-*`);
 * - anonymous pools still held by some process (a test process still alive).
 *
 *   node scripts/leftovers.mjs snapshot   # before the tests (npm test does this)
 *   node scripts/leftovers.mjs check      # after: exit 1 if anything new is left
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as binding from '../binding.cjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SNAPSHOT = join(root, 'node_modules', '.cache', 'arraypool-leftovers.json');

/** The named segments and the anonymous pools (with holders) there are now. */
export function present() {
  return {
    named: readdirSync('/dev/shm').filter((n) => n.startsWith('arraypool-')),
    anonymous: binding.listAnonymousPools().map((p) => ({ name: p.name, holders: p.holderPids })),
  };
}

/**
 * Put in the environment of everything a run starts (children inherit it,
 * with the run's pid as the value): on a machine where other arraypool users
 * run at the same time, an anonymous pool none of whose holders carries it is
 * theirs, not a leftover of this run.
 */
export const RUN_MARK = 'ARRAYPOOL_LEFTOVERS_RUN';

function carriesMark(pid, mark) {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`${RUN_MARK}=${mark}`);
  } catch {
    return false; // gone since, or not ours to read
  }
}

/**
 * What is in `after` and not in `before`, as lines to print. With `mark` (the
 * RUN_MARK value a run gave its children), only anonymous pools held by one of
 * them count.
 */
export function newSince(before, after, mark) {
  const named = after.named.filter((n) => !before.named.includes(n)).map((n) => `/dev/shm/${n}`);
  const known = new Set(before.anonymous.map((p) => p.name));
  const anonymous = after.anonymous
    .filter((p) => !known.has(p.name))
    .filter((p) => mark === undefined || p.holders.some((pid) => carriesMark(pid, mark)))
    .map((p) => `${p.name} (anonymous, still held by pid ${p.holders.join(', ')})`);
  return [...named, ...anonymous];
}

// Only when run as a script: test-node-lines.mjs imports this module, and
// its own arguments (`-- 24 26`) are no command.
const command = process.argv[1] === fileURLToPath(import.meta.url) ? process.argv[2] : undefined;
if (command === 'snapshot') {
  mkdirSync(dirname(SNAPSHOT), { recursive: true });
  writeFileSync(SNAPSHOT, JSON.stringify(present()));
} else if (command === 'check') {
  let before = { named: [], anonymous: [] };
  try {
    before = JSON.parse(readFileSync(SNAPSHOT, 'utf8'));
  } catch {
    console.error('no snapshot (run `node scripts/leftovers.mjs snapshot` first): counting everything');
  }
  const left = newSince(before, present());
  if (left.length > 0) {
    console.error(`FAIL: the tests left ${left.length} pool(s) behind: ${left.join('; ')}`);
    process.exit(1);
  }
  console.log('nothing left behind: no new /dev/shm segment, no anonymous pool still held');
} else if (command !== undefined) {
  console.error('usage: node scripts/leftovers.mjs snapshot | check');
  process.exit(2);
}
