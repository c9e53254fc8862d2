/**
 * Timing helpers shared by the scenarios: every figure the bench reports is
 * the median of several measured rounds taken after warm-up rounds, and the
 * competitors of a scenario take their rounds in turn (round-robin), so that
 * a slow phase of the machine (another process, a thermal step) hits all of
 * them rather than one.
 */
import { collectGarbage } from './children.mjs';

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * Runs `rounds` measured rounds (after `warmup` unmeasured ones) of every
 * competitor in turn. A competitor's `round()` returns the value measured in
 * that round (e.g. ms, or µs per operation); a full GC runs between rounds,
 * outside the measurement, so that one round's garbage is not collected on
 * the next one's clock.
 *
 * @param {{ id: string, round: () => Promise<number> | number }[]} competitors
 * @param {{ rounds: number, warmup: number, between?: () => Promise<void> }} options
 *   `between` runs before every round too (e.g. a GC in a forked worker)
 * @returns {Promise<Map<string, number[]>>} the measured samples by competitor id
 */
export async function roundRobin(competitors, { rounds, warmup, between }) {
  const samples = new Map(competitors.map((c) => [c.id, []]));
  for (let r = 0; r < warmup + rounds; r++) {
    for (const competitor of competitors) {
      await collectGarbage();
      await between?.();
      const value = await competitor.round();
      if (r >= warmup) samples.get(competitor.id).push(value);
    }
  }
  return samples;
}

/** Milliseconds taken by `fn` (awaited). */
export async function timeMs(fn) {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Microseconds per call of `fn`, over `count` calls in a tight loop. */
export function microsPerOp(count, fn) {
  const t0 = performance.now();
  for (let i = 0; i < count; i++) fn(i);
  return ((performance.now() - t0) * 1000) / count;
}
