/**
 * An SVG bar chart of a run's ratios (hand-written SVG, no dependency).
 *
 *   node benches/chart.mjs [results.json] [results.svg]
 *
 * One group per scenario, one bar per competitor, on a logarithmic axis
 * centred on 1 (the scenario's reference): bars grow right for "more than
 * the reference" and left for "less". Whether more is worse (time, memory)
 * or better (throughput) is said in each group's title.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { formatRatio, formatValue } from './lib/results.mjs';

const WIDTH = 1120;
const LABEL_WIDTH = 500; // competitor names, left
const PLOT_LEFT = LABEL_WIDTH + 10;
const PLOT_WIDTH = 440;
const BAR_HEIGHT = 16;
const ROW_HEIGHT = 22;
const GROUP_GAP = 34; // room for the group title
const COLORS = { reference: '#9e9e9e', baseline: '#c7c7c7', arraypool: '#1f77b4', other: '#e07b39' };

const escapeXml = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]);

function colorOf(row) {
  if (row.reference) return COLORS.reference;
  if (row.id.startsWith('bare')) return COLORS.baseline; // a variant of the reference, not a competitor
  return row.id.startsWith('arraypool') || row.label.startsWith('arraypool') || row.id.startsWith('two-processes')
    ? COLORS.arraypool
    : COLORS.other;
}

export function renderChart(results) {
  const ratios = results.scenarios.flatMap((s) => s.rows.map((r) => r.ratio)).filter((r) => r > 0);
  // Axis: whole decades around every ratio.
  const lo = Math.min(-1, Math.floor(Math.log10(Math.min(...ratios))));
  const hi = Math.max(1, Math.ceil(Math.log10(Math.max(...ratios))));
  const xOf = (ratio) => PLOT_LEFT + ((Math.log10(ratio) - lo) / (hi - lo)) * PLOT_WIDTH;
  const one = xOf(1);

  const parts = [];
  let y = 60;
  for (const scenario of results.scenarios) {
    const direction = scenario.better === 'higher' ? 'higher is better' : 'lower is better';
    parts.push(
      // White band behind the title so the grid lines do not cross it.
      `<rect x="0" y="${y}" width="${WIDTH}" height="20" fill="white"/>`,
      `<text x="10" y="${y + 14}" class="group">${escapeXml(scenario.title)} <tspan class="hint">(${direction})</tspan></text>`,
    );
    y += GROUP_GAP - 10;
    for (const row of scenario.rows) {
      const end = xOf(row.ratio);
      const [x0, x1] = end >= one ? [one, end] : [end, one];
      const label = row.reference ? `${row.label} (reference)` : row.label;
      const value = `${formatRatio(row.ratio)}  ${formatValue(row.median, scenario.unit)}`;
      parts.push(
        `<text x="${LABEL_WIDTH}" y="${y + 12}" class="label" text-anchor="end">${escapeXml(label)}</text>`,
        `<rect x="${x0.toFixed(1)}" y="${y}" width="${Math.max(1, x1 - x0).toFixed(1)}" height="${BAR_HEIGHT}" fill="${colorOf(row)}"><title>${escapeXml(`${label}: ${value}`)}</title></rect>`,
        `<text x="${(Math.max(x1, one) + 6).toFixed(1)}" y="${y + 12}" class="value">${escapeXml(value)}</text>`,
      );
      y += ROW_HEIGHT;
    }
    y += 12;
  }
  const plotTop = 50;
  const plotBottom = y;
  const grid = [];
  for (let d = lo; d <= hi; d++) {
    const gx = xOf(10 ** d);
    grid.push(
      `<line x1="${gx.toFixed(1)}" y1="${plotTop}" x2="${gx.toFixed(1)}" y2="${plotBottom}" class="${d === 0 ? 'one' : 'grid'}"/>`,
      `<text x="${gx.toFixed(1)}" y="${plotTop - 4}" class="axis" text-anchor="middle">${10 ** d >= 1 ? 10 ** d : (10 ** d).toFixed(-d)}×</text>`,
    );
  }
  const m = results.machine;
  const height = plotBottom + 30;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="Helvetica, Arial, sans-serif">
<style>
  .title { font-size: 16px; font-weight: bold; }
  .group { font-size: 13px; font-weight: bold; }
  .hint { font-weight: normal; fill: #666; }
  .label, .value { font-size: 11.5px; }
  .axis, .foot { font-size: 10.5px; fill: #555; }
  .grid { stroke: #ddd; }
  .one { stroke: #333; stroke-width: 1.5; }
</style>
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" class="title">arraypool benchmarks: ratio to each scenario's reference (log scale)</text>
${grid.join('\n')}
${parts.join('\n')}
<text x="10" y="${height - 10}" class="foot">${escapeXml(`${m.cpuModel}, ${m.cores} cores, Node ${m.node}, ${m.kernel}; ${results.mode} run, ${results.date}`)}</text>
</svg>
`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const input = process.argv[2] ?? fileURLToPath(new URL('./results.json', import.meta.url));
  const output = process.argv[3] ?? fileURLToPath(new URL('./results.svg', import.meta.url));
  writeFileSync(output, renderChart(JSON.parse(readFileSync(input, 'utf8'))));
  console.log(`wrote ${output}`);
}
