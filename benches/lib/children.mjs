/**
 * Forked bench processes: every child of the bench is made here, so that
 * all of them can be killed however the run ends (no orphan keeps a pool
 * segment mapped or a shm-typed-array segment named).
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

/** The one script every forked bench process runs (its role comes as argv[2]). */
export const CHILD_SCRIPT = fileURLToPath(new URL('../child.mjs', import.meta.url));

const live = new Set();

// Last resort when the runner dies on an exception: 'exit' handlers must be
// synchronous, and kill() is.
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/**
 * A bench child talking over an IPC channel with advanced serialization
 * (typed arrays as typed arrays, as the IPC competitor needs). One request
 * at a time: `request` resolves with the child's next message.
 */
export class BenchChild {
  /**
   * @param {string} role what child.mjs runs: 'worker', 'driver' or 'frame-consumer'
   * @param {{ args?: string[], env?: NodeJS.ProcessEnv }} [options]
   */
  constructor(role, { args = [], env = process.env } = {}) {
    this.process = fork(CHILD_SCRIPT, [role, ...args], {
      serialization: 'advanced',
      // Same flags as the runner (--expose-gc: the child collects between rounds).
      execArgv: ['--expose-gc'],
      env,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.pid = this.process.pid;
    this.exited = once(this.process, 'exit');
    live.add(this.process);
    this.exited.then(() => live.delete(this.process));
  }

  /** Resolves with the child's next message; rejects if it exits first. */
  nextMessage() {
    return nextMessage(this.process, `bench child ${this.pid}`);
  }

  /** Sends `message` and resolves with the child's answer. */
  request(message) {
    const answer = this.nextMessage();
    this.process.send(message);
    return answer;
  }

  /** Waits for the child's 'ready' (its pool started, its modules loaded). */
  async ready() {
    const msg = await this.nextMessage();
    if (msg?.op !== 'ready') throw new Error(`bench child ${this.pid}: expected 'ready', got ${JSON.stringify(msg)}`);
    return msg;
  }

  /** Ends the child and waits until it has exited (its exit hooks ran). */
  stop() {
    return endChild(this.process, this.exited);
  }
}

/**
 * Resolves with the next message `emitter` (a ChildProcess or a worker
 * thread) emits; rejects on a `{ op: 'error' }` message, an 'error' event,
 * or if it exits first. `who` names it in the errors.
 */
export function nextMessage(emitter, who) {
  return new Promise((resolve, reject) => {
    const settle = (fn) => (...args) => {
      emitter.off('message', onMessage).off('error', onError).off('exit', onExit);
      fn(...args);
    };
    const onMessage = settle((msg) => {
      if (msg && msg.op === 'error') reject(new Error(`${who}: ${msg.message}`));
      else resolve(msg);
    });
    const onError = settle(reject);
    // A process exits with (code, signal), a thread with (code).
    const onExit = settle((code, signal) => reject(new Error(`${who} exited (${signal ?? code}) before answering`)));
    emitter.once('message', onMessage).once('error', onError).once('exit', onExit);
  });
}

/**
 * Ends a child the gentle way first: closing the IPC channel makes child.mjs
 * exit normally, so its 'exit' hooks (arraypool leaving its pools) run. A
 * child that does not go within 5 s is killed.
 */
async function endChild(child, exited = once(child, 'exit')) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  if (child.connected) child.disconnect();
  else child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** Stops every child still running (the runner's `finally`). */
export async function stopAllChildren() {
  await Promise.all([...live].map((child) => endChild(child)));
}

/** Runs a full GC in this process and lets finalizers run (they run on a later tick). */
export async function collectGarbage() {
  if (typeof globalThis.gc !== 'function') return;
  for (let i = 0; i < 2; i++) {
    globalThis.gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
}
