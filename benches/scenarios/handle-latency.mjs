/**
 * Scenario 4, handle latency: what sending an array through arraypool adds
 * to a message. A handle goes parent → child → parent and is revived (and
 * released) on each side; the reference is the same round trip with no
 * handle in the message. Both use the fork IPC channel with advanced
 * serialization, and a tight callback loop (no promise per message).
 */
import { empty, revive } from '../../dist/index.js';
import { BenchChild } from '../lib/children.mjs';
import { roundRobin } from '../lib/measure.mjs';
import { scenarioResult } from '../lib/results.mjs';

/** µs per round trip over `count` sequential round trips. */
function pingPong(worker, count, makeMessage, onReply) {
  return new Promise((resolve, reject) => {
    const child = worker.process;
    let left = count;
    let t0 = 0;
    const onMessage = (msg) => {
      try {
        onReply(msg);
      } catch (error) {
        child.off('message', onMessage);
        reject(error);
        return;
      }
      if (--left > 0) {
        child.send(makeMessage());
        return;
      }
      child.off('message', onMessage);
      resolve(((performance.now() - t0) * 1000) / count);
    };
    child.on('message', onMessage);
    t0 = performance.now();
    child.send(makeMessage());
  });
}

export async function run({ roundTrips, rounds, warmup }) {
  const worker = new BenchChild('worker');
  // The handle's size does not depend on the array's: 1 KiB.
  const array = empty('float64', 128);
  array.array.fill(7);
  try {
    await worker.ready();
    const competitors = [
      {
        id: 'empty-message',
        label: 'empty message round trip (child.send, advanced)',
        reference: true,
        round: () =>
          pingPong(worker, roundTrips, () => ({ op: 'echo' }), (msg) => {
            if (msg.op !== 'echo') throw new Error(`unexpected reply ${JSON.stringify(msg)}`);
          }),
      },
      {
        id: 'arraypool-handle',
        label: 'arraypool handle round trip, revived on each side',
        round: () =>
          pingPong(worker, roundTrips, () => ({ op: 'echo-handle', x: array }), (msg) => {
            const { x } = revive(msg);
            if (x.array[127] !== 7) throw new Error('handle round trip: wrong data');
            x.release();
          }),
      },
    ];
    const samples = await roundRobin(competitors, { rounds, warmup });
    return scenarioResult(
      {
        id: 'handle-latency',
        title: '4. send a handle parent → child → parent, revived on each side',
        unit: 'µs',
        note: 'µs per round trip; reference: the same message without the handle',
      },
      competitors.map((c) => ({ ...c, samples: samples.get(c.id) })),
    );
  } finally {
    array.release();
    await worker.stop();
  }
}
