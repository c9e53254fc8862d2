/**
 * ProcessPool: a pool of forked Node processes running task functions, whose
 * typed-array arguments and results travel through the shared-memory pool.
 *
 * Reference ownership, so nothing outlives a task:
 * - the parent holds the copies it made of the arguments until the task
 *   settles (the worker attaches them meanwhile), then releases them;
 * - the worker releases the arguments it attached when the task returns, and
 *   holds its result blocks until the parent says it has attached them;
 * - a worker that dies holding references is reaped when it exits.
 * No block is ever left waiting in flight for a receiver that is gone.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { setMaxListeners } from 'node:events';
import { availableParallelism } from 'node:os';
import { resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';

// The worker script's path (process-pool-worker-path.cjs): the CommonJS build has no import.meta.url.
import { processPoolWorker as RUNNER } from '#process-pool-worker';

import { decodeMessage, encodeMessage, inlineThreshold, markAllSent, releaseAll, type Serialization } from './channels.js';
import { type PoolTypedArray } from './dtypes.js';
import { ArrayPoolError, type ErrorCode } from './errors.js';
import { SEGMENT_ENV, getPool, type Pool } from './pool.js';
import { TransferableArray, makeTransferable, toTransferable } from './transferable.js';

export interface ProcessPoolOptions {
  /**
   * The task module: a path (relative to the working directory) or file URL
   * of an ESM or CommonJS file whose exports (or default export's
   * properties) are the task functions. Each worker imports it once.
   */
  module: string | URL;
  /** Worker processes (default `os.availableParallelism()`). */
  workers?: number;
  /**
   * The IPC serialization (default 'advanced'). With 'json', typed arrays
   * go through the pool or, below DEFAULT_JSON_INLINE_BELOW_BYTES, inline as
   * tagged base64, and NaN, ±Infinity and -0 are tagged; Maps, Sets,
   * Dates, BigInts, undefined and other values JSON would change are
   * ERR_NOT_SERIALIZABLE as arguments (before the task is queued) or
   * results (the task rejects).
   */
  serialization?: Serialization;
  /** Typed arrays smaller than this are cloned inline (default DEFAULT_INLINE_BELOW_BYTES). */
  inlineBelowBytes?: number;
}

export interface ExecOptions {
  /**
   * Aborting rejects the task with ERR_ABORTED: a queued task never starts;
   * a running one's worker is killed (and replaced), since JS cannot be
   * interrupted from outside.
   */
  signal?: AbortSignal;
}

/** Options of `ProcessPool.map`. */
export interface MapOptions {
  /**
   * Rows (along the first axis) per task. Default: the rows split into four
   * chunks per worker, so a slow chunk does not leave the others idle.
   */
  chunk?: number;
  /** The shape of a plain typed array (default: one axis). A TransferableArray has its own. */
  shape?: readonly number[];
  /** Called after each chunk's task settles successfully, in completion order. */
  onProgress?: (progress: MapProgress) => void;
  /** Aborting rejects `map` with ERR_ABORTED and aborts the chunks still queued or running. */
  signal?: AbortSignal;
}

export interface MapProgress {
  /** Chunks done so far, and in all. */
  done: number;
  total: number;
  /** The rows `[start, end)` of the chunk that just finished. */
  start: number;
  end: number;
}

/** Where a chunk lies, passed to the task after the chunk itself. */
export interface MapChunk {
  index: number;
  start: number;
  end: number;
}

// `any` is what lets functions with specific parameter types match.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type TaskFunction = (...args: any[]) => unknown;

/** The names of the functions a task module exports. */
export type TaskName<Tasks> = { [K in keyof Tasks]: Tasks[K] extends TaskFunction ? K : never }[keyof Tasks] & string;

/** A parameter that takes a typed array also takes that array's TransferableArray. */
type Argument<P> = P extends PoolTypedArray ? P | TransferableArray<P> : P;

/** The arguments task `K` takes, as the caller may pass them. */
export type TaskArgs<Tasks, K extends keyof Tasks> = Tasks[K] extends (...args: infer A) => unknown
  ? { [I in keyof A]: Argument<A[I]> }
  : never;

/** What task `K` resolves to. */
export type TaskResult<Tasks, K extends keyof Tasks> = Tasks[K] extends (...args: never[]) => infer R ? Awaited<R> : never;

/** @internal What a worker needs to know, passed as its first argument (JSON). */
export interface WorkerConfig {
  moduleUrl: string;
  inlineBelowBytes: number;
  /** Results follow the channel's rules (see EncodeOptions.json). */
  json: boolean;
}

/** @internal An error thrown in a worker, as it crosses back. */
export interface RemoteError {
  name: string;
  message: string;
  stack?: string;
  code?: string;
}

/** @internal Parent to worker. */
export type ToWorker =
  | { kind: 'run'; id: number; name: string; args: unknown }
  /** The parent attached the result of task `id`: the worker may let go of it. */
  | { kind: 'taken'; id: number };

/** @internal Worker to parent. */
export type FromWorker =
  | { kind: 'ready' }
  /** `held`: the worker keeps references for the result until it hears 'taken'. */
  | { kind: 'settled'; id: number; ok: true; value: unknown; held: boolean }
  | { kind: 'settled'; id: number; ok: false; error: RemoteError };

interface Task {
  readonly id: number;
  readonly name: string;
  /** The arguments as they cross (handles in place of pooled arrays). */
  readonly args: unknown;
  /** The parent's references to the argument copies, held until the task settles. */
  readonly references: TransferableArray[];
  /** Arrays whose handles the arguments carry: marked as sent when dispatched, not before. */
  readonly toMark: TransferableArray[];
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: Error) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
  /** Resolves when the task settles either way (close waits for running tasks). */
  readonly settled: Promise<void>;
  readonly markSettled: () => void;
  done: boolean;
}

interface WorkerProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  /** Imported its task module and listens for tasks. */
  ready: boolean;
  /** Killed on purpose (aborted task): takes no more tasks. */
  doomed: boolean;
  task: Task | undefined;
}

export class ProcessPool<Tasks extends object = Record<string, TaskFunction>> implements AsyncDisposable {
  readonly #size: number;
  readonly #serialization: Serialization;
  readonly #config: WorkerConfig;
  readonly #pool: Pool;
  readonly #workers = new Set<WorkerProcess>();
  readonly #queue: Task[] = [];
  #nextId = 0;
  #closing: Promise<void> | undefined;

  constructor(options: ProcessPoolOptions) {
    this.#size = options.workers ?? availableParallelism();
    if (!Number.isSafeInteger(this.#size) || this.#size < 1) {
      throw new ArrayPoolError('ERR_INVALID_ARG', `workers must be a positive integer, got ${String(options.workers)}`);
    }
    this.#serialization = options.serialization ?? 'advanced';
    this.#config = {
      moduleUrl: moduleUrl(options.module),
      inlineBelowBytes: inlineThreshold(this.#serialization, options.inlineBelowBytes),
      json: this.#serialization === 'json',
    };
    // Before forking, so the workers inherit the pool (ARRAYPOOL_SEGMENT).
    this.#pool = getPool();
    this.#spawnMissing();
  }

  /** The pids of the current workers (replaced ones drop out). */
  get pids(): number[] {
    return [...this.#workers].flatMap((w) => (w.child.pid === undefined ? [] : [w.child.pid]));
  }

  /** Runs task `name` with `args` in a worker; see `exec` for options. */
  run<K extends TaskName<Tasks>>(name: K, ...args: TaskArgs<Tasks, K>): Promise<TaskResult<Tasks, K>> {
    return this.exec(name, args);
  }

  /**
   * Runs task `name` in the next free worker. Typed arrays anywhere in `args`
   * travel through the pool (copied in once now, so later changes by the
   * caller are not seen, unless they already live in the pool: those are
   * shared). Resolves with the task's result, its typed arrays viewing the
   * pool: plain arrays as plain arrays, TransferableArrays as
   * TransferableArrays (release those when done).
   */
  exec<K extends TaskName<Tasks>>(
    name: K,
    args: TaskArgs<Tasks, K>,
    options: ExecOptions = {},
  ): Promise<TaskResult<Tasks, K>> {
    try {
      return this.#enqueue(name, args, options.signal) as Promise<TaskResult<Tasks, K>>;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The everyday parallel loop: splits `array` along its first axis into
   * chunks of `options.chunk` rows, runs task `name` on each as
   * `task(chunk, { index, start, end })` — the chunk is a zero-copy view of
   * the pool, not a copy — and resolves with the results in chunk order.
   * A plain typed array is copied into the pool once; a TransferableArray
   * (or an array already viewing the pool) is shared as it is. The first
   * failing chunk rejects `map` and aborts the others.
   */
  async map<K extends TaskName<Tasks>>(
    name: K,
    array: PoolTypedArray | TransferableArray,
    options: MapOptions = {},
  ): Promise<Array<TaskResult<Tasks, K>>> {
    if (this.#closing) throw closedError(name);
    if (options.signal?.aborted) throw abortedError(name, options.signal);
    const { whole, owned } = shareable(array, options.shape);
    const controller = new AbortController();
    // One listener per chunk's task: not a leak.
    setMaxListeners(0, controller.signal);
    const onOuterAbort = (): void => controller.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onOuterAbort, { once: true });
    const chunks: TransferableArray[] = [];
    try {
      const rows = whole.shape[0] ?? 0;
      const size = chunkRows(options.chunk, rows, this.#size);
      const ranges: MapChunk[] = [];
      for (let start = 0, index = 0; start < rows; start += size, index++) {
        ranges.push({ index, start, end: Math.min(rows, start + size) });
      }
      let done = 0;
      const results = ranges.map(async (range) => {
        const chunk = whole.subarray(range.start, range.end);
        chunks.push(chunk);
        try {
          const result = await this.#enqueue(name, [chunk, range], controller.signal);
          done++;
          options.onProgress?.({ done, total: ranges.length, start: range.start, end: range.end });
          return result as TaskResult<Tasks, K>;
        } catch (error) {
          controller.abort(error);
          throw error;
        }
      });
      const settled = await Promise.allSettled(results);
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed || options.signal?.aborted) {
        // The results of the chunks that did finish are nobody's now.
        for (const r of settled) if (r.status === 'fulfilled') releaseTransferables(r.value);
      }
      if (options.signal?.aborted) throw abortedError(name, options.signal);
      if (failed) {
        // The first failure, not the ERR_ABORTED of the chunks it stopped.
        const first = settled.find(
          (r): r is PromiseRejectedResult =>
            r.status === 'rejected' && !(r.reason instanceof ArrayPoolError && r.reason.code === 'ERR_ABORTED'),
        );
        throw (first ?? failed).reason;
      }
      return settled.map((r) => (r as PromiseFulfilledResult<TaskResult<Tasks, K>>).value);
    } finally {
      options.signal?.removeEventListener('abort', onOuterAbort);
      for (const chunk of chunks) chunk.release();
      if (owned) whole.release();
    }
  }

  /**
   * Stops taking tasks: queued tasks reject with ERR_PROCESS_POOL_CLOSED,
   * running ones finish, then the workers exit (dropping their references).
   * Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutDown();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #enqueue(name: string, args: unknown, signal: AbortSignal | undefined): Promise<unknown> {
    if (this.#closing) throw closedError(name);
    if (signal?.aborted) throw abortedError(name, signal);
    const { message, references, toMark } = encodeMessage(args, {
      inlineBelowBytes: this.#config.inlineBelowBytes,
      json: this.#config.json,
      transferRequired: false,
      adopt: false,
    });
    return new Promise((resolve, reject) => {
      let markSettled!: () => void;
      const settled = new Promise<void>((r) => (markSettled = r));
      const task: Task = {
        id: this.#nextId++,
        name,
        args: message,
        references,
        toMark,
        resolve,
        reject,
        signal,
        onAbort: () => this.#abort(task),
        settled,
        markSettled,
        done: false,
      };
      signal?.addEventListener('abort', task.onAbort, { once: true });
      this.#queue.push(task);
      this.#spawnMissing();
      this.#dispatch();
    });
  }

  #spawnMissing(): void {
    while (!this.#closing && this.#workers.size < this.#size) this.#spawn();
  }

  #spawn(): void {
    const child = fork(RUNNER, [JSON.stringify(this.#config)], {
      serialization: this.#serialization,
      env: { ...process.env, [SEGMENT_ENV]: this.#pool.locator() },
    });
    let markExited!: () => void;
    const exited = new Promise<void>((resolve) => (markExited = resolve));
    const worker: WorkerProcess = { child, exited, ready: false, doomed: false, task: undefined };
    this.#workers.add(worker);
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      this.#onExit(worker, code, signal);
      markExited();
    };
    child.once('exit', onExit);
    child.on('message', (message: FromWorker) => this.#onMessage(worker, message));
    // Failed deliveries reach the send callbacks. A fork that failed (no
    // pid) may never emit 'exit', so it counts as one here.
    child.on('error', () => {
      if (child.pid === undefined) onExit(null, null);
    });
  }

  #dispatch(): void {
    for (const worker of this.#workers) {
      if (this.#queue.length === 0) return;
      if (!worker.ready || worker.doomed || worker.task !== undefined) continue;
      const task = this.#queue.shift() as Task;
      worker.task = task;
      this.#post(worker, { kind: 'run', id: task.id, name: task.name, args: task.args }, task);
    }
  }

  /** Sends to a worker; a message that cannot be serialized fails its task, not the pool. */
  #post(worker: WorkerProcess, message: ToWorker, task?: Task): void {
    try {
      if (task !== undefined && message.kind === 'run') markAllSent({ toMark: task.toMark });
      worker.child.send(message, () => {});
    } catch (error) {
      if (task === undefined) return;
      worker.task = undefined;
      this.#settle(task, toError(error));
      this.#dispatch();
    }
  }

  #onMessage(worker: WorkerProcess, message: FromWorker): void {
    if (message.kind === 'ready') {
      worker.ready = true;
      this.#dispatch();
      return;
    }
    const task = worker.task;
    // A late answer for an aborted task: its worker is being killed, and
    // its death frees what the answer names.
    if (task === undefined || task.id !== message.id || task.done) return;
    worker.task = undefined;
    if (message.ok) this.#settleWithResult(worker, task, message.value, message.held);
    else this.#settle(task, fromRemote(message.error));
    this.#dispatch();
  }

  #settleWithResult(worker: WorkerProcess, task: Task, value: unknown, held: boolean): void {
    let outcome: Error | { value: unknown };
    try {
      outcome = { value: decodeMessage(value, { plainArrays: false, json: this.#config.json }).message };
    } catch (error) {
      outcome = toError(error);
    }
    if (held) this.#post(worker, { kind: 'taken', id: task.id });
    // Only after decoding: a result that shares an argument's block stays alive.
    this.#settle(task, outcome);
  }

  #settle(task: Task, outcome: Error | { value: unknown }): void {
    if (task.done) return;
    task.done = true;
    task.signal?.removeEventListener('abort', task.onAbort);
    releaseAll(task.references);
    if (outcome instanceof Error) task.reject(outcome);
    else task.resolve(outcome.value);
    task.markSettled();
  }

  #abort(task: Task): void {
    const queued = this.#queue.indexOf(task);
    if (queued >= 0) this.#queue.splice(queued, 1);
    else this.#killRunner(task);
    this.#settle(task, abortedError(task.name, task.signal));
  }

  #killRunner(task: Task): void {
    for (const worker of this.#workers) {
      if (worker.task !== task) continue;
      worker.doomed = true;
      worker.child.kill('SIGKILL');
    }
  }

  #onExit(worker: WorkerProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (!this.#workers.delete(worker)) return; // a failed fork reports twice
    // The references it held (arguments, results not yet taken) go now.
    if (!this.#pool.closed) {
      try {
        this.#pool.reap();
      } catch {
        // A busy lock (ERR_LOCK_TIMEOUT): the next allocation's sweep reaps it.
      }
    }
    const how = signal !== null ? `signal ${signal}` : `exit code ${String(code)}`;
    const pid = worker.child.pid ?? 'unknown';
    if (worker.task !== undefined) {
      this.#settle(
        worker.task,
        new ArrayPoolError('ERR_WORKER_DIED', `worker process ${pid} died (${how}) while running task "${worker.task.name}"`),
      );
    }
    if (this.#closing) return;
    if (worker.ready) {
      this.#spawnMissing();
    } else if (this.#workers.size === 0) {
      // Died while starting and nobody is left to run the queue: fail it
      // rather than respawn in a loop (the next exec tries again).
      const error = new ArrayPoolError('ERR_WORKER_DIED', `worker process ${pid} died during start-up (${how})`);
      for (const task of this.#queue.splice(0)) this.#settle(task, error);
    }
    this.#dispatch();
  }

  async #shutDown(): Promise<void> {
    for (const task of this.#queue.splice(0)) this.#settle(task, closedError(task.name));
    await Promise.all([...this.#workers].map((w) => w.task?.settled));
    for (const worker of this.#workers) {
      if (worker.child.connected) worker.child.disconnect(); // the worker exits on disconnect
    }
    await Promise.all([...this.#workers].map((w) => w.exited));
  }
}

function moduleUrl(module: string | URL): string {
  if (module instanceof URL) return module.href;
  if (typeof module !== 'string' || module === '') {
    throw new ArrayPoolError('ERR_INVALID_ARG', 'module must be a path or file URL of the task module');
  }
  return module.startsWith('file:') ? module : pathToFileURL(resolvePath(module)).href;
}

const toError = (error: unknown): Error => (error instanceof Error ? error : new Error(String(error)));

/** The array as a TransferableArray in the pool, and whether `map` made it (and so releases it). */
function shareable(array: PoolTypedArray | TransferableArray, shape: readonly number[] | undefined): { whole: TransferableArray; owned: boolean } {
  if (array instanceof TransferableArray) {
    if (shape !== undefined) {
      throw new ArrayPoolError('ERR_INVALID_ARG', 'map: a TransferableArray has its own shape; options.shape is for plain arrays');
    }
    return { whole: array, owned: false };
  }
  const inPool = shape === undefined ? toTransferable(array) : undefined;
  if (inPool) return { whole: inPool, owned: true };
  return { whole: makeTransferable(array, { transferRequired: false, ...(shape ? { shape } : {}) }), owned: true };
}

/** Releases every TransferableArray in `value` (any depth of arrays, objects, Maps, Sets). */
function releaseTransferables(value: unknown, seen = new Set<object>()): void {
  if (typeof value !== 'object' || value === null || seen.has(value)) return;
  seen.add(value);
  if (value instanceof TransferableArray) {
    value.release();
    return;
  }
  if (ArrayBuffer.isView(value)) return;
  const items = value instanceof Map ? [...value.keys(), ...value.values()] : value instanceof Set ? [...value] : Object.values(value);
  for (const item of items) releaseTransferables(item, seen);
}

/** Rows per chunk: the caller's, or four chunks per worker. */
function chunkRows(chunk: number | undefined, rows: number, workers: number): number {
  if (chunk === undefined) return Math.max(1, Math.ceil(rows / (workers * 4)));
  if (!Number.isSafeInteger(chunk) || chunk < 1) {
    throw new ArrayPoolError('ERR_INVALID_ARG', `map: chunk must be a positive integer number of rows, got ${String(chunk)}`);
  }
  return chunk;
}

function closedError(name: string): ArrayPoolError {
  return new ArrayPoolError('ERR_PROCESS_POOL_CLOSED', `cannot run task "${name}": the ProcessPool is closed`);
}

function abortedError(name: string, signal: AbortSignal | undefined): ArrayPoolError {
  return new ArrayPoolError('ERR_ABORTED', `task "${name}" was aborted`, { cause: signal?.reason });
}

/** Rebuilds a worker's error with its name, message, stack and code. */
function fromRemote(remote: RemoteError): Error {
  const error =
    remote.name === 'ArrayPoolError' && remote.code !== undefined
      ? new ArrayPoolError(remote.code as ErrorCode, remote.message)
      : new Error(remote.message);
  error.name = remote.name;
  if (remote.stack !== undefined) error.stack = remote.stack;
  if (remote.code !== undefined) Object.assign(error, { code: remote.code });
  return error;
}
