// The recipes in examples/ run as documented: `node examples/<name>.mjs`
// exits 0 and prints its result.
import test from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const EXAMPLES = fileURLToPath(new URL('../examples/', import.meta.url));

/** Runs a recipe in its own environment (no pool of ours to inherit). */
async function runRecipe(name) {
  const env = { ...process.env };
  delete env.ARRAYPOOL_SEGMENT;
  const { stdout } = await run(process.execPath, [`${EXAMPLES}${name}.mjs`], { env });
  return stdout;
}

test('workerpool (process workers): the result comes back through the pool, nothing left', async (t) => {
  const out = await runRecipe('workerpool');
  t.regex(out, /^workerpool: y\[0\]=1 y\[999999\]=1000000 \(8000000 bytes, no copy\)$/m);
  t.regex(out, /^live blocks left: 0$/m);
});

test('tinypool (child_process runtime): two workers sum and double slices of one block', async (t) => {
  const out = await runRecipe('tinypool');
  t.regex(out, /^tinypool: sum=4500000 from 2 workers, doubled in place: x\[9\]=18$/m);
  t.regex(out, /^live blocks left: 0$/m);
});

test('node:cluster with send/onMessage: workers answer with sums and squares', async (t) => {
  const out = await runRecipe('cluster');
  t.regex(out, /^cluster: sum=499999500000 from 2 workers, last square=999998000001$/m);
});
