#!/usr/bin/env node
/**
 * What DEFAULT_JSON_INLINE_BELOW_BYTES rests on: a send/onMessage round trip
 * over a forked child's JSON channel (child.send serialization 'json', as
 * node:cluster uses by default), one Float64Array per message, inline
 * (tagged base64) against through the pool, per array size.
 *
 *   node --expose-gc benches/json-inline.mjs [rounds]
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { keep, onMessage, send, startPool } from '../dist/index.js';

const SIZES = [64, 256, 1024, 2048, 4096, 8192, 16384];

if (process.argv[2] === 'echo') {
  startPool();
  // A fresh array each way (as a real answer would be): forwarding the
  // received pool view itself would let its block go with the view.
  onMessage(process, (m) => void send(process, { inline: m.inline, x: m.x.slice() }, { inlineBelowBytes: m.inline ? Infinity : 0 }));
  process.send('ready');
} else {
  const rounds = Number(process.argv[2] ?? 2000);
  startPool({ size: '64M' });
  const child = fork(fileURLToPath(import.meta.url), ['echo'], { serialization: 'json' });
  await new Promise((r) => child.once('message', r));
  let waiting;
  onMessage(child, (m) => waiting(keep(m)));
  const roundTrip = async (message, inlineBelowBytes) => {
    const back = new Promise((r) => (waiting = r));
    await send(child, message, { inlineBelowBytes });
    return back;
  };
  const time = async (bytes, inline) => {
    const message = { inline, x: new Float64Array(bytes / 8).fill(Math.PI) };
    const threshold = inline ? Infinity : 0;
    for (let i = 0; i < 200; i++) await roundTrip(message, threshold);
    const start = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) await roundTrip(message, threshold);
    return Number(process.hrtime.bigint() - start) / rounds / 1000;
  };
  console.log('bytes  inline µs  pool µs  inline/pool');
  for (const bytes of SIZES) {
    // Alternating, twice, to even out drift; the best of each.
    const a = [], b = [];
    for (let k = 0; k < 2; k++) {
      a.push(await time(bytes, true));
      b.push(await time(bytes, false));
    }
    const inline = Math.min(...a), pool = Math.min(...b);
    console.log(`${String(bytes).padStart(5)}  ${inline.toFixed(1).padStart(9)}  ${pool.toFixed(1).padStart(7)}  ${(inline / pool).toFixed(2).padStart(11)}`);
  }
  child.disconnect();
}
