/**
 * Scenario 6, contention: two processes allocating and releasing blocks of
 * one pool at the same time, against one process doing it alone. Every
 * allocation and release takes the pool's process-shared lock, so this is
 * where two processes get in each other's way.
 *
 * Each process runs `empty(1 KiB, { transferRequired: false })` +
 * `release()` for a fixed wall-clock window; both start at an agreed instant
 * (each spins until it), so the windows overlap fully. Rounds alternate
 * "alone" and "together" so both see the same machine.
 */
import { empty } from '../../dist/index.js';
import { BenchChild } from '../lib/children.mjs';
import { scenarioResult } from '../lib/results.mjs';

/** Wall-clock ms comparable between processes (performance.now() is per process). */
const wallClockMs = () => performance.timeOrigin + performance.now();

/** Runs in the forked process: allocation+release pairs done in the window. */
export function allocationLoop({ startAt, durationMs, bytes }) {
  const length = bytes / 8;
  while (wallClockMs() < startAt) {
    // Spin: both processes leave this loop within microseconds of each other.
  }
  const end = startAt + durationMs;
  let ops = 0;
  const t0 = wallClockMs();
  do {
    for (let k = 0; k < 256; k++) empty('float64', length, { transferRequired: false }).release();
    ops += 256;
  } while (wallClockMs() < end);
  return { opsPerSecond: ops / ((wallClockMs() - t0) / 1000) };
}

export async function run({ durationMs, rounds, warmup, bytes }) {
  const workers = [new BenchChild('worker'), new BenchChild('worker')];
  try {
    await Promise.all(workers.map((w) => w.ready()));
    const window = (participants) => {
      const startAt = wallClockMs() + 50;
      return Promise.all(participants.map((w) => w.request({ op: 'alloc-loop', startAt, durationMs, bytes })));
    };
    const alone = [];
    const each = [];
    const together = [];
    for (let r = 0; r < warmup + rounds; r++) {
      const [solo] = await window([workers[0]]);
      const pair = await window(workers);
      if (r < warmup) continue;
      alone.push(solo.opsPerSecond);
      const total = pair[0].opsPerSecond + pair[1].opsPerSecond;
      together.push(total);
      each.push(total / 2);
    }
    return scenarioResult(
      {
        id: 'contention',
        title: `6. allocate + release ${bytes} B blocks: two processes at once vs one alone`,
        unit: 'ops/s',
        better: 'higher',
        note: `throughput over ${durationMs} ms windows; ratio = throughput / one process alone`,
      },
      [
        { id: 'one-process', label: 'one process alone', reference: true, samples: alone },
        { id: 'two-processes-each', label: 'two processes at once, per process', samples: each },
        { id: 'two-processes-total', label: 'two processes at once, both together', samples: together },
      ],
    );
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
}
