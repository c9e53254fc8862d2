import test from 'ava';

import { layoutVersion } from '../dist/index.js';

test('layoutVersion() is a positive integer', (t) => {
  const v = layoutVersion();
  t.true(Number.isInteger(v), `expected an integer, got ${v}`);
  t.true(v > 0, `expected a positive layout version, got ${v}`);
  // ava's nodeArguments must pass --expose-gc to the test process.
  t.is(typeof globalThis.gc, 'function');
});
