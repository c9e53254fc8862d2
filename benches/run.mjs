/**
 * `npm run bench`: arraypool against what users use now, side by side in
 * one run. Prints a table (scenario, competitor, median, ratio to the
 * scenario's reference) and the targets, or JSON.
 *
 *   npm run bench                      full suite (~2 min; 2e7 float64)
 *   npm run bench -- --quick           CI smoke: small sizes, few rounds (< 1 min)
 *   npm run bench -- --json            JSON only, on stdout
 *   npm run bench -- --json=out.json   table on stdout, JSON to a file
 *   npm run bench -- --save            also write benches/results.json, results.svg, RESULTS.md
 *   npm run bench -- --only=headline,memory   some scenarios (ids below)
 *
 * Progress goes to stderr. Exits non-zero if a scenario fails or the run
 * left a segment in /dev/shm; missed targets are reported, not failures.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { startPool } from '../dist/index.js';
import { renderChart } from './chart.mjs';
import { stopAllChildren } from './lib/children.mjs';
import { describeMachine } from './lib/machine.mjs';
import { runnable, sweepLeftovers } from './lib/shm.mjs';
import { resultsTable, resultsMarkdown, targetsTable } from './report.mjs';
import * as channelThroughput from './scenarios/channel-throughput.mjs';
import * as contention from './scenarios/contention.mjs';
import * as copyIn from './scenarios/copy-in.mjs';
import * as handleLatency from './scenarios/handle-latency.mjs';
import * as headline from './scenarios/headline.mjs';
import * as memory from './scenarios/memory.mjs';
import * as smallArrays from './scenarios/small-arrays.mjs';
import { checkTargets } from './targets.mjs';

/** Sizes and rounds per mode. The full sizes are the issue's; quick ones keep CI under a minute. */
const CONFIG = {
  full: {
    poolSize: '2G', // sparse: only touched pages use memory (peak ~0.7 GB here)
    headline: { length: 2e7, rounds: 7, warmup: 2 },
    'copy-in': { length: 2e7, rounds: 9, warmup: 2 },
    small: { sizes: [64, 1024, 65536], rounds: 7, warmup: 2, ops: 20_000, shmOps: 200 },
    'handle-latency': { roundTrips: 600, rounds: 21, warmup: 2 },
    memory: { length: 2e7 },
    contention: { bytes: 1024, durationMs: 1000, rounds: 5, warmup: 1 },
    'channel-throughput': { frames: 200, window: 8, rounds: 21, warmup: 3 },
  },
  quick: {
    poolSize: '512M',
    headline: { length: 2e6, rounds: 3, warmup: 1 },
    'copy-in': { length: 2e6, rounds: 3, warmup: 1 },
    small: { sizes: [64, 1024, 65536], rounds: 3, warmup: 1, ops: 5000, shmOps: 100 },
    'handle-latency': { roundTrips: 500, rounds: 3, warmup: 1 },
    memory: { length: 2e6 },
    contention: { bytes: 1024, durationMs: 200, rounds: 3, warmup: 1 },
    'channel-throughput': { frames: 64, window: 8, rounds: 3, warmup: 1 },
  },
};

const SCENARIOS = [
  { id: 'headline', module: headline },
  { id: 'copy-in', module: copyIn },
  { id: 'small', module: smallArrays },
  { id: 'handle-latency', module: handleLatency },
  { id: 'memory', module: memory },
  { id: 'contention', module: contention },
  { id: 'channel-throughput', module: channelThroughput },
];

function parseArgs(argv) {
  const options = { quick: false, json: false, jsonPath: undefined, save: false, only: undefined, backing: undefined };
  for (const arg of argv) {
    if (arg === '--quick') options.quick = true;
    else if (arg === '--json') options.json = true;
    else if (arg.startsWith('--json=')) options.jsonPath = arg.slice('--json='.length);
    else if (arg === '--save') options.save = true;
    else if (arg.startsWith('--only=')) options.only = arg.slice('--only='.length).split(',');
    else if (arg.startsWith('--backing=')) options.backing = arg.slice('--backing='.length);
    else if (arg === '--help' || arg === '-h') {
      console.log(`usage: npm run bench -- [--quick] [--json | --json=PATH] [--save] [--backing=memfd|shm] [--only=${SCENARIOS.map((s) => s.id).join(',')}]`);
      process.exit(0);
    } else throw new Error(`unknown argument ${JSON.stringify(arg)} (try --help)`);
  }
  const known = new Set(SCENARIOS.map((s) => s.id));
  for (const id of options.only ?? []) if (!known.has(id)) throw new Error(`unknown scenario ${JSON.stringify(id)}`);
  return options;
}

const progress = (message) => process.stderr.write(`[bench] ${message}\n`);

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const mode = options.quick ? 'quick' : 'full';
  const config = CONFIG[mode];
  if (typeof globalThis.gc !== 'function') progress('warning: run with --expose-gc (npm run bench does) to collect between rounds');
  runnable([]); // says now, in one line, if the competitor's addon does not load on this Node

  const started = performance.now();
  const results = { mode, date: new Date().toISOString(), machine: describeMachine(), config, scenarios: [] };
  // Before any fork: the workers inherit this pool through ARRAYPOOL_SEGMENT.
  const pool = startPool({ size: config.poolSize, backing: options.backing });
  const poolNames = [pool.name];
  let leftovers = [];
  try {
    for (const { id, module } of SCENARIOS) {
      if (options.only && !options.only.includes(id)) continue;
      progress(`${id} ...`);
      const t0 = performance.now();
      const result = await module.run(config[id], { poolNames });
      results.scenarios.push(...[result].flat());
      progress(`${id} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
  } finally {
    await stopAllChildren();
    pool.close();
    leftovers = sweepLeftovers(poolNames);
  }
  results.durationSeconds = (performance.now() - started) / 1000;
  results.targets = checkTargets(results);

  const json = JSON.stringify(results, null, 2);
  if (options.json) process.stdout.write(`${json}\n`);
  else {
    console.log(`\n${resultsTable(results)}\n\n${targetsTable(results)}\n`);
  }
  if (options.jsonPath) writeFileSync(options.jsonPath, `${json}\n`);
  if (options.save) {
    const here = (name) => fileURLToPath(new URL(name, import.meta.url));
    writeFileSync(here('./results.json'), `${json}\n`);
    writeFileSync(here('./results.svg'), renderChart(results));
    writeFileSync(here('./RESULTS.md'), resultsMarkdown(results));
    progress('wrote benches/results.json, benches/results.svg, benches/RESULTS.md');
  }
  if (leftovers.length > 0) {
    progress(`FAIL: the run left ${leftovers.length} segment(s) in /dev/shm (removed now): ${leftovers.join(', ')}`);
    process.exitCode = 1;
  } else {
    progress(`/dev/shm: nothing left behind; ${results.durationSeconds.toFixed(0)} s`);
  }
}

await main();
