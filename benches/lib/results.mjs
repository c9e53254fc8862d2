/**
 * The shape every scenario returns, which the table, the JSON, the chart
 * and the target checks all read:
 *
 *   { id, title, unit, better: 'lower' | 'higher', note?,
 *     rows: [{ id, label, median, samples, ratio, reference?, extra? }] }
 *
 * `ratio` is the row's median over the reference row's median: for times
 * (lower is better) 3.0 means three times slower than the reference; for
 * throughput (higher is better) 0.5 means half the reference's throughput.
 */
import { median } from './measure.mjs';

/**
 * @param {object} scenario id, title, unit, better, note
 * @param {{ id: string, label: string, reference?: boolean, samples?: number[], value?: number, extra?: object }[]} rows
 *   a row has measured `samples` (its median is reported) or a single `value`
 */
export function scenarioResult({ id, title, unit, better = 'lower', note }, rows) {
  const withMedians = rows.map((row) => ({
    id: row.id,
    label: row.label,
    median: row.samples ? median(row.samples) : row.value,
    samples: row.samples ?? [row.value],
    ...(row.reference ? { reference: true } : {}),
    ...(row.extra ? { extra: row.extra } : {}),
  }));
  const reference = withMedians.find((row) => row.reference);
  if (!reference) throw new Error(`scenario ${id}: no reference row`);
  for (const row of withMedians) row.ratio = row.median / reference.median;
  return { id, title, unit, better, ...(note ? { note } : {}), rows: withMedians };
}

/** A value in the scenario's unit, for tables and chart labels. */
export function formatValue(value, unit) {
  const digits = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  switch (unit) {
    case 'ms':
      return `${digits(value)} ms`;
    case 'µs':
      return `${digits(value)} µs`;
    case 'MB':
      return `${digits(value)} MB`;
    case 'ops/s':
      return value >= 1e6 ? `${digits(value / 1e6)} M ops/s` : `${digits(value / 1e3)} k ops/s`;
    default:
      return `${digits(value)} ${unit}`;
  }
}

export function formatRatio(ratio) {
  return ratio >= 100 ? `${ratio.toFixed(0)}×` : ratio >= 10 ? `${ratio.toFixed(1)}×` : `${ratio.toFixed(2)}×`;
}
