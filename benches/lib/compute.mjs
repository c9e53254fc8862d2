/**
 * The npshmex headline workload, shared by the runner and the forked worker:
 * a float64 input with known values, `y[i] = x[i] + 1`, and a cheap check of
 * the result (a wrong or stale buffer must fail the bench, not look fast).
 */

/** The input's value at index i (known, so either process can check a result). */
export const inputValue = (i) => (i % 1024) * 0.5;

export function fillInput(x) {
  for (let i = 0; i < x.length; i++) x[i] = inputValue(i);
}

export function addOne(x, y) {
  for (let i = 0; i < x.length; i++) y[i] = x[i] + 1;
}

/** Throws unless `y` looks like addOne of the known input (ends, middle and a few spots). */
export function checkResult(label, y, length) {
  if (y.length !== length) throw new Error(`${label}: result has length ${y.length}, expected ${length}`);
  const spots = [0, 1, length >> 1, length - 1, (length * 0.37) | 0, (length * 0.81) | 0];
  for (const i of spots) {
    if (y[i] !== inputValue(i) + 1) throw new Error(`${label}: wrong result at ${i}: ${y[i]}`);
  }
}
