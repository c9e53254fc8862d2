// A process that only receives from another process's pool (it revived a
// handle of it) closes that pool once nothing of it can reach it any more:
// the producer is gone, it holds nothing in it, and no block is in flight.
// Before, a long-lived receiver kept every producer's pool mapped, with its
// pages, until it exited.
import test from 'ava';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { revive, startPool } from '../dist/index.js';
import { closeIdlePools } from '../dist/src/pool.js';
import { collectGarbage } from './helpers.mjs';

const PRODUCER = fileURLToPath(new URL('./fixtures/producer.mjs', import.meta.url));

startPool({ size: '16M' });

const mapped = (name) => readFileSync('/proc/self/maps', 'utf8').includes(`/memfd:${name} `);

/** Forks a producer with a pool of its own; resolves once its `count` messages arrived. */
async function startProducer(count) {
  const env = { ...process.env };
  delete env.ARRAYPOOL_SEGMENT; // its own pool, not ours
  const child = fork(PRODUCER, [String(count)], { env, serialization: 'advanced' });
  const exited = once(child, 'exit');
  const messages = [];
  await new Promise((resolve, reject) => {
    child.on('message', (m) => {
      messages.push(m);
      if (messages.length === count) resolve();
    });
    exited.then(() => reject(new Error('the producer exited early')));
  });
  return {
    messages,
    async stop() {
      child.send('exit');
      const [code] = await exited;
      if (code !== 0) throw new Error(`producer exited with ${code}`);
    },
  };
}

test.serial("a producer's pool is closed and unmapped once the producer is gone and nothing of it is held or in flight", async (t) => {
  const producer = await startProducer(2);
  const [first, second] = producer.messages;
  const a = revive(first).a; // opens the producer's pool here
  const name = a.segment;
  t.is(a.array[1023], 1);
  a.release();
  t.deepEqual(closeIdlePools(), [], 'not closed while the producer is attached');
  await producer.stop();
  t.deepEqual(closeIdlePools(), [], 'the second array is in flight: its message may not be read yet');
  t.true(mapped(name));

  const b = revive(second).a;
  t.is(b.array[0], 2, 'the in-flight array arrives whole after the producer exited');
  t.deepEqual(closeIdlePools(), [], 'held by this process');
  b.release();
  closeIdlePools(); // or the pool's own timer, had a second gone by
  t.true(b.pool.closed, 'closed once nothing of it can come');
  t.deepEqual(closeIdlePools(), [], 'closed once');
  for (let round = 0; round < 20 && mapped(name); round++) await collectGarbage();
  t.false(mapped(name), "the producer's pool is unmapped here");
});

test.serial("this process's own pool is never closed for being idle", async (t) => {
  const own = startPool();
  const producer = await startProducer(1);
  const a = revive(producer.messages[0]).a;
  t.not(a.segment, own.name);
  a.release();
  await producer.stop();
  closeIdlePools(); // or the pool's own timer
  t.true(a.pool.closed, "the producer's pool is closed");
  t.false(own.closed, "this process's own pool is not");
});

test.serial('a pool first opened to receive and then started as the process own is kept open', async (t) => {
  const producer = await startProducer(1);
  const name = producer.messages[0].a.__arraypool__.split(':')[1];
  const env = { ...process.env, ARRAYPOOL_SEGMENT: name };
  const adopter = fork(fileURLToPath(new URL('./fixtures/adopter.mjs', import.meta.url)), [], { env, serialization: 'advanced' });
  const exited = once(adopter, 'exit');
  adopter.send({ op: 'revive', message: producer.messages[0] });
  const [revived] = await once(adopter, 'message');
  t.deepEqual(revived, { value: 1, own: name, segment: name });
  await producer.stop();
  adopter.send({ op: 'check' });
  const [checked] = await once(adopter, 'message');
  t.deepEqual(checked, { closed: [], ownClosed: false });
  await exited;
});
