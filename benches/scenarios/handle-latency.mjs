/**
 * Scenario 4, handle latency: what sending an array through arraypool adds
 * to a message. A handle goes parent → child → parent and is revived (and
 * released) on each side; the reference is the same round trip with no
 * handle in the message. Both use the fork IPC channel with advanced
 * serialization, and a tight callback loop (no promise per message).
 *
 * The two kinds of round trip take turns within each round, in runs of
 * `BLOCK` (empty ×25, handle ×25, empty ×25, ...): on a shared 2-vCPU VM the
 * latency of a wake-up drifts by 1.5× within seconds, which made two
 * separate loops (the first version) disagree by more than the difference
 * measured. Not one by one: work a handle trip leaves behind (a freed
 * view's finalizer runs on a later turn of the event loop) would then land
 * on the next empty trip's clock.
 */
import { empty, revive } from '../../dist/index.js';
import { collectGarbage, BenchChild } from '../lib/children.mjs';
import { scenarioResult } from '../lib/results.mjs';

/** Round trips of one kind in a row before the other kind's turn. */
const BLOCK = 25;

/**
 * `count` sequential round trips, the kinds taking turns every BLOCK trips;
 * returns the mean µs per round trip of each kind.
 */
function interleavedPingPong(worker, count, kinds) {
  return new Promise((resolve, reject) => {
    const child = worker.process;
    const total = kinds.map(() => 0);
    const trips = kinds.map(() => 0);
    let i = 0;
    let t0 = 0;
    const sendNext = () => {
      t0 = performance.now();
      child.send(kinds[Math.floor(i / BLOCK) % kinds.length].make());
    };
    const onMessage = (msg) => {
      const elapsed = performance.now() - t0;
      const k = Math.floor(i / BLOCK) % kinds.length;
      try {
        kinds[k].onReply(msg);
      } catch (error) {
        child.off('message', onMessage);
        reject(error);
        return;
      }
      total[k] += elapsed;
      trips[k]++;
      if (++i < count) {
        sendNext();
        return;
      }
      child.off('message', onMessage);
      resolve(total.map((ms, j) => (ms * 1000) / trips[j]));
    };
    child.on('message', onMessage);
    sendNext();
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
        make: () => ({ op: 'echo' }),
        onReply: (msg) => {
          if (msg.op !== 'echo') throw new Error(`unexpected reply ${JSON.stringify(msg)}`);
        },
      },
      {
        id: 'arraypool-handle',
        label: 'arraypool handle round trip, revived on each side',
        make: () => ({ op: 'echo-handle', x: array }),
        onReply: (msg) => {
          const { x } = revive(msg);
          if (x.array[127] !== 7) throw new Error('handle round trip: wrong data');
          x.release();
        },
      },
    ];
    const samples = competitors.map(() => []);
    for (let r = 0; r < warmup + rounds; r++) {
      await collectGarbage();
      const means = await interleavedPingPong(worker, roundTrips, competitors);
      if (r >= warmup) means.forEach((m, j) => samples[j].push(m));
    }
    return scenarioResult(
      {
        id: 'handle-latency',
        title: '4. send a handle parent → child → parent, revived on each side',
        unit: 'µs',
        note: 'µs per round trip, the two kinds alternating; reference: the same message without the handle',
      },
      competitors.map((c, j) => ({ id: c.id, label: c.label, reference: c.reference, samples: samples[j] })),
    );
  } finally {
    array.release();
    await worker.stop();
  }
}
