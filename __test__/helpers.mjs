// Test helpers: forking the fixture child and talking to it.
import { fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const CHILD = fileURLToPath(new URL('./fixtures/child.mjs', import.meta.url));

/** Forks the fixture child; resolves once it has started its pool. */
export async function spawnChild({ serialization = 'advanced', env } = {}) {
  const child = fork(CHILD, [], {
    serialization,
    execArgv: ['--expose-gc'],
    env: env ?? process.env,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let next = 0;
  const waiting = new Map();
  child.on('message', (msg) => {
    const w = waiting.get(msg.id);
    if (w) {
      waiting.delete(msg.id);
      w(msg.value);
    }
  });
  const message = (id) => new Promise((resolve) => waiting.set(id, resolve));
  const ready = message('ready');
  const exited = once(child, 'exit');
  await Promise.race([ready, exited.then(([code]) => Promise.reject(new Error(`child exited early: ${code}`)))]);
  return {
    child,
    exited,
    /** Sends a request and resolves with the child's answer. */
    request(op, args = {}) {
      const id = `r${next++}`;
      const answer = message(id);
      child.send({ id, op, ...args });
      return answer;
    },
    /** Resolves with the next unsolicited message `id` (e.g. 'result'). */
    message,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

/** Lets finalizers run after a full GC (they run on a later tick). */
export async function collectGarbage() {
  for (let i = 0; i < 3; i++) {
    globalThis.gc();
    await new Promise((r) => setImmediate(r));
  }
}

/**
 * The pool's used bytes once nothing more is being freed: garbage collected
 * (finalizers and FinalizationRegistry callbacks run on later ticks) until
 * two readings agree, at most ten rounds. Dead children are reaped first.
 */
export async function settledUsedBytes(pool) {
  pool.reap();
  let last = -1;
  for (let round = 0; round < 10; round++) {
    await collectGarbage();
    const now = pool.stats().usedBytes;
    if (now === last) return now;
    last = now;
  }
  return last;
}

/** Every dtype with a sample value that exercises its range. */
export const DTYPE_SAMPLES = [
  [Int8Array, -3],
  [Uint8Array, 250],
  [Uint8ClampedArray, 255],
  [Int16Array, -30000],
  [Uint16Array, 60000],
  [Int32Array, -2e9],
  [Uint32Array, 4e9],
  [Float32Array, 1.5],
  [Float64Array, Math.PI],
  [BigInt64Array, -(2n ** 60n)],
  [BigUint64Array, 2n ** 63n],
  [Buffer, 0xab],
];

/** Runs the CLI at `cliPath`; resolves with how it ended and what it printed. */
export function runCli(cliPath, ...args) {
  const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return once(child, 'close').then(([code, signal]) => ({ code, signal, stdout, stderr }));
}
