/**
 * Scenario 7's frames, shared by the producer and the consumers: 1 MiB of
 * float64 whose every element depends on the frame's sequence number, and
 * the sum the consumer must find (so a stale, reused or half-copied frame
 * fails the bench instead of looking fast).
 */

/** Elements per frame: 131072 float64 = 1 MiB. */
export const FRAME_LENGTH = 131072;
export const FRAME_BYTES = FRAME_LENGTH * Float64Array.BYTES_PER_ELEMENT;

/** The value every element of frame `seq` holds: distinct for neighbouring frames, a multiple of 0.5 (sums stay exact). */
const frameValue = (seq) => (seq % 4096) + 0.5;

/** The producer's work: write the whole frame. */
export function fillFrame(frame, seq) {
  frame.fill(frameValue(seq));
}

/** The consumer's work: read the whole frame. */
export function sumFrame(frame) {
  let sum = 0;
  for (let i = 0; i < frame.length; i++) sum += frame[i];
  return sum;
}

/** What `sumFrame` gives for frame `seq` (exact: 2^17 × a multiple of 0.5 below 2^12). */
export const expectedSum = (seq) => FRAME_LENGTH * frameValue(seq);
