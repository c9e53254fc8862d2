// Issue 12, item 3: `release()` (or GC) of an array whose handle never left
// the process frees its block, even with the default transferRequired: true;
// once its handle may have left (structured clone, JSON, toHandle(), send),
// of this view or of any other view of the same block, the transferred rule
// holds: in flight until some process revives it.
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { inspect } from 'node:util';
import { serialize, deserialize } from 'node:v8';
import test from 'ava';

import * as binding from '../binding.cjs';
import { makeTransferable, readHandle, revive, startPool, empty, zeros, toTransferable, send } from '../dist/index.js';
import { collectGarbage } from './helpers.mjs';

const pool = startPool();
const MIB = 1 << 20;

const stats = () => pool.stats();
/** Whether the block is still marked unsent, read without the getters (which would mark it). */
const unsent = (t) => {
  const shown = inspect(t);
  const generation = Number(/generation: (\d+)/.exec(shown)[1]);
  return binding.blockEscaped(t.poolId, t.offset, generation) === false;
};
const escaped = (t) => !unsent(t);

// A child that keeps the handles it receives without reviving them until asked.
const CHILD_SOURCE = `
import { revive, startPool } from ${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)};
startPool();
const held = [];
process.on('message', (msg) => {
  if (msg.op === 'hold') { held.push(msg.arr); process.send({ id: msg.id }); }
  else if (msg.op === 'revive') {
    let sum = 0;
    for (const h of held.splice(0)) { const t = revive(h); sum += t.array.reduce((a, b) => a + b, 0); t.release(); }
    process.send({ id: msg.id, sum });
  }
});
process.send({ id: 'ready' });
`;
const childPath = join(mkdtempSync(join(tmpdir(), 'arraypool-unsent-')), 'child.mjs');
writeFileSync(childPath, CHILD_SOURCE);
test.after.always(() => rmSync(dirname(childPath), { recursive: true, force: true }));

async function spawn(serialization) {
  const child = fork(childPath, [], { serialization, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map();
  child.on('message', (m) => waiting.get(m.id)?.(m));
  const answer = (id) => new Promise((resolve) => waiting.set(id, resolve));
  await answer('ready');
  let n = 0;
  return {
    child,
    request(op, extra = {}) {
      const id = `r${n++}`;
      const a = answer(id);
      child.send({ id, op, ...extra });
      return a;
    },
    async stop() {
      child.kill();
      if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
    },
  };
}

test.serial('50 arrays of 1 MiB made and released without sending: the pool is back to its baseline', (t) => {
  const before = stats();
  for (let i = 0; i < 50; i++) {
    const a = makeTransferable(new Float64Array(MIB / 8).fill(i));
    a.release();
  }
  // empty/zeros/copy/subarray/toTransferable: all local too.
  for (let i = 0; i < 10; i++) {
    const e = empty('float32', [256, 1024]);
    const z = zeros('uint8', MIB);
    const c = e.copy();
    const s = z.subarray(10, 20);
    const v = toTransferable(z.array);
    for (const x of [e, z, c, s, v]) x.release();
  }
  const after = stats();
  t.is(after.usedBytes, before.usedBytes);
  t.is(after.inFlightBlocks, 0);
  t.is(after.liveBlocks, before.liveBlocks);
  t.is(pool.check().violation, null);
});

test.serial("the library's own accesses do not mark the block; reading the handle does", (t) => {
  const a = makeTransferable(new Float64Array([1, 2, 3, 4]));
  const s = a.subarray(1, 3);
  void a.array, a.shape, a.offset, a.segment, a.byteLength, a.dtype, a.released;
  inspect(a);
  String(inspect(s));
  t.is(revive({ nested: [a, new Map([[1, s]])] }).nested[0], a, 'revive leaves a live array alone');
  a.copy().release();
  toTransferable(s.array).release();
  readHandle(a);
  readHandle(s);
  t.true(unsent(a), 'nothing above marks');
  t.is(a.generation > 0, true);
  t.true(escaped(a), 'reading generation marks the block');
  t.true(escaped(s), 'per block: the subarray shares the mark');
  s.release();
  a.release();
  t.is(stats().inFlightBlocks, 1, 'in flight: its handle may be on its way');
  revive(a.toHandle()).release();
  t.is(stats().inFlightBlocks, 0);
});

test.serial('a revived array has nothing to mark: its handle is a data property, its clone the same handle', (t) => {
  const a = makeTransferable(new Float64Array([1, 2, 3, 4]));
  const sent = deserialize(serialize(a));
  t.deepEqual(Object.keys(sent), ['__arraypool__'], 'one field: the compact form');
  const r = revive(sent);
  const desc = Object.getOwnPropertyDescriptor(r, '__arraypool__');
  t.true(desc.enumerable && 'value' in desc, 'a data property, not the marking getter');
  t.deepEqual(Object.keys(r), Object.keys(a), 'same fields, same order');
  t.deepEqual(deserialize(serialize(r)), sent, 'its clone is the handle it arrived as');
  t.deepEqual(readHandle(sent), a.toHandle());
  t.true(typeof Object.getOwnPropertyDescriptor(a, '__arraypool__').get === 'function', 'a made array keeps the getter');
  r.release();
  a.release();
});

test.serial('reading the handle of a made array marks its block, whichever way it is read', (t) => {
  for (const read of [(a) => a.__arraypool__, (a) => a.generation, (a) => ({ ...a }), (a) => JSON.stringify(a)]) {
    const a = makeTransferable(new Float64Array(4));
    void a.offset, a.segment, a.byteOffset, a.byteLength, a.dtype, a.shape, Object.keys(a);
    t.true(unsent(a), 'the other fields and the keys mark nothing');
    read(a);
    t.true(escaped(a), String(read));
    a.release();
    revive(a.toHandle()).release();
  }
});

for (const [what, leak] of [
  ['structured clone', (x) => deserialize(serialize(x))],
  ['structuredClone()', (x) => structuredClone(x)],
  ['JSON', (x) => JSON.parse(JSON.stringify(x))],
  ['toHandle()', (x) => x.toHandle()],
  ['spread', (x) => ({ ...x })],
]) {
  test.serial(`${what}, then release: the block stays in flight until revived`, (t) => {
    const before = stats();
    const a = makeTransferable(new Float64Array(1024).fill(7));
    const handle = leak(a);
    a.release();
    t.is(stats().inFlightBlocks, before.inFlightBlocks + 1);
    t.is(stats().usedBytes > before.usedBytes, true);
    const back = revive(handle);
    t.is(back.array[5], 7, 'the data survived');
    back.release();
    t.is(stats().usedBytes, before.usedBytes);
    t.is(stats().inFlightBlocks, before.inFlightBlocks);
  });
}

for (const serialization of ['json', 'advanced']) {
  test.serial(`sent to a child (${serialization}) and released by the parent before the child revives it: in flight, then freed`, async (t) => {
    const c = await spawn(serialization);
    try {
      const before = stats();
      const a = makeTransferable(new Float64Array(MIB / 8).fill(1));
      await c.request('hold', { arr: a });
      a.release();
      t.is(stats().inFlightBlocks, before.inFlightBlocks + 1, 'the transferred rule holds');
      t.is(stats().liveBlocks, before.liveBlocks + 1);
      const { sum } = await c.request('revive');
      t.is(sum, MIB / 8, 'the child read the data');
      t.is(stats().inFlightBlocks, before.inFlightBlocks);
      t.is(stats().usedBytes, before.usedBytes, 'freed once revived and released');
    } finally {
      await c.stop();
    }
  });

  test.serial(`a subarray sent to a child (${serialization}) while the parent releases the original: in flight`, async (t) => {
    const c = await spawn(serialization);
    try {
      const before = stats();
      const a = makeTransferable(new Float64Array(1000).fill(2));
      const s = a.subarray(100, 200);
      await c.request('hold', { arr: s });
      a.release();
      t.is(stats().liveBlocks, before.liveBlocks + 1, 'held by the subarray');
      s.release();
      t.is(stats().inFlightBlocks, before.inFlightBlocks + 1, 'the original\u2019s block keeps the rule: its subarray was sent');
      const { sum } = await c.request('revive');
      t.is(sum, 200);
      t.is(stats().usedBytes, before.usedBytes);
      t.is(stats().inFlightBlocks, before.inFlightBlocks);
    } finally {
      await c.stop();
    }
  });
}

test.serial('send() (the channel encoder) marks the block', async (t) => {
  const c = await spawn('advanced');
  try {
    const before = stats();
    const a = makeTransferable(new Float64Array(10).fill(3));
    await send(c.child, { op: 'hold', id: 'sent', arr: a });
    a.release();
    t.is(stats().inFlightBlocks, before.inFlightBlocks + 1);
    const { sum } = await c.request('revive');
    t.is(sum, 30);
    t.is(stats().usedBytes, before.usedBytes);
  } finally {
    await c.stop();
  }
});

test.serial('GC frees never-sent arrays too; a GC\u2019d array whose handle left stays in flight', async (t) => {
  const before = stats();
  (() => {
    for (let i = 0; i < 20; i++) makeTransferable(new Float64Array(MIB / 8).fill(i));
  })();
  await collectGarbage();
  t.is(stats().usedBytes, before.usedBytes, 'never sent: freed by their finalizers');
  t.is(stats().inFlightBlocks, before.inFlightBlocks);
  const json = (() => JSON.stringify(makeTransferable(new Float64Array(16).fill(4))))();
  await collectGarbage();
  t.is(stats().inFlightBlocks, before.inFlightBlocks + 1, 'its handle left: in flight');
  const back = revive(JSON.parse(json));
  t.is(back.array[15], 4);
  back.release();
  t.is(stats().usedBytes, before.usedBytes);
});

test.serial('transferRequired: false is unchanged; a released view\u2019s handle still marks the live block', (t) => {
  const before = stats();
  makeTransferable(new Uint8Array(100), { transferRequired: false }).release();
  t.is(stats().usedBytes, before.usedBytes);
  const a = makeTransferable(new Uint8Array(100).fill(9));
  const s = a.subarray(0, 50);
  a.release();
  const handle = JSON.parse(JSON.stringify(a)); // read after release: the block is still held by `s`
  t.is(readHandle(handle).byteLength, 100);
  s.release();
  t.is(stats().inFlightBlocks, before.inFlightBlocks + 1);
  revive(handle).release();
  t.is(stats().usedBytes, before.usedBytes);
});
