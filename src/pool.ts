/**
 * Pools as seen from JS: creating or inheriting the process's pool
 * (`startPool`), opening other pools on demand by name, and leaving them
 * cleanly when the process ends.
 */
import { isMainThread } from 'node:worker_threads';

import * as binding from '#binding';
import { ArrayPoolError, native } from './errors.js';

/** The variable through which a pool's name reaches the processes forked after it. */
export const SEGMENT_ENV = 'ARRAYPOOL_SEGMENT';
/** The variable that sets the default pool size (`'512M'`, `'4G'`, bytes). */
export const SIZE_ENV = 'ARRAYPOOL_SIZE';

export interface PoolOptions {
  /** Segment size in bytes or as a string: `'512M'`, `'4G'`, `'64KiB'`. Default: `ARRAYPOOL_SIZE`, else half of /dev/shm (sparse: pages are used only when touched). */
  size?: number | string;
  /** Freed blocks at least this large give their pages back to the system (default 256 MiB). */
  punchThreshold?: number;
  /** Longest wait for the pool lock while its holder is alive, in ms (default 10 000). */
  lockTimeoutMs?: number;
}

export interface PoolStats {
  capacityBytes: number;
  heapBytes: number;
  usedBytes: number;
  freeBytes: number;
  largestFreeBytes: number;
  liveBlocks: number;
  inFlightBlocks: number;
  processes: number;
  lockTakeovers: number;
  /** Views this process holds in this pool. */
  heldReferences: number;
}

export interface CheckResult {
  blocks: number;
  freeBlocks: number;
  violation: string | null;
}

export interface ReapResult {
  processes: number;
  references: number;
  blocksFreed: number;
  bytesFreed: number;
}

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Parses `'512M'`, `'4G'`, `'1.5GiB'`, `'4096'` (binary units) or a number of bytes. */
export function parseSize(size: number | string): number {
  if (typeof size === 'number') {
    if (Number.isSafeInteger(size) && size > 0) return size;
  } else if (typeof size === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(size);
    const unit = m ? UNITS[(m[2] ?? '').toLowerCase()] : undefined;
    if (m && unit !== undefined) {
      const bytes = Math.floor(Number(m[1]) * unit);
      if (Number.isSafeInteger(bytes) && bytes > 0) return bytes;
    }
  }
  throw new ArrayPoolError('ERR_INVALID_ARG', `invalid pool size ${JSON.stringify(size)}: use bytes or e.g. '512M', '4G'`);
}

export class Pool {
  /** The segment name (in /dev/shm). */
  readonly name: string;
  /** @internal */
  readonly id: number;
  #closed = false;

  /** @internal */
  constructor(id: number) {
    this.id = id;
    this.name = native(() => binding.poolName(id));
  }

  /** Whether this process created the segment (and unlinks it on exit). */
  get isCreator(): boolean {
    return native(() => binding.isCreator(this.id));
  }

  get closed(): boolean {
    return this.#closed;
  }

  stats(): PoolStats {
    return native(() => binding.stats(this.id));
  }

  /** Walks the whole pool and verifies its invariants (diagnostics; O(pool)). */
  check(): CheckResult {
    const r = native(() => binding.check(this.id));
    return { blocks: r.blocks, freeBlocks: r.freeBlocks, violation: r.violation ?? null };
  }

  /** Drops the references of processes that died without releasing them. */
  reap(): ReapResult {
    return native(() => binding.reap(this.id));
  }

  /**
   * Leaves the pool: the creator unlinks the name now (attached processes
   * keep working), new allocations and attaches fail with ERR_POOL_CLOSED,
   * and the process's references go as its views are released or collected.
   * Threads share their process's attachment: a thread's close() ends that
   * thread's use, and the process leaves when the last thread using it closes.
   */
  close(): void {
    if (this.#closed) return;
    const created = this.isCreator;
    native(() => binding.closePool(this.id));
    this.#closed = true;
    pools.delete(this.name);
    poolsById.delete(this.id);
    if (defaultPool === this) {
      defaultPool = undefined;
      // Children forked later must not look for a pool this process removed;
      // a pool inherited from the parent is still there for them.
      if (created && process.env[SEGMENT_ENV] === this.name) delete process.env[SEGMENT_ENV];
    }
  }
}

const pools = new Map<string, Pool>();
const poolsById = new Map<number, Pool>();
let defaultPool: Pool | undefined;

/** Records a pool this process opened, by name (for handles) and by id (for `toTransferable`). */
function remember(pool: Pool): Pool {
  pools.set(pool.name, pool);
  poolsById.set(pool.id, pool);
  return pool;
}

/** @internal The open pool with this native id. */
export function poolById(id: number): Pool | undefined {
  const pool = poolsById.get(id);
  return pool && !pool.closed ? pool : undefined;
}

function nativeConfig(options: PoolOptions, withSize: boolean): binding.PoolConfig {
  const config: binding.PoolConfig = {};
  if (withSize) {
    const size = options.size ?? process.env[SIZE_ENV];
    if (size !== undefined && size !== '') config.capacity = parseSize(size);
  }
  if (options.punchThreshold !== undefined) config.punchThreshold = options.punchThreshold;
  if (options.lockTimeoutMs !== undefined) config.lockTimeoutMs = options.lockTimeoutMs;
  return config;
}

/** The pool named `name`, opened on first use (a handle's segment). */
export function poolByName(name: string): Pool {
  const known = pools.get(name);
  if (known && !known.closed) return known;
  const pool = remember(new Pool(native(() => binding.openPool(name, {}))));
  installExitHooks();
  return pool;
}

/**
 * The initializer a worker calls at start-up (and what every other entry
 * point calls when nothing was started). In a process forked after its
 * parent created a pool, attaches to that pool (the name arrives in
 * `ARRAYPOOL_SEGMENT`) and registers the process; otherwise creates a pool
 * and exports its name to the processes forked afterwards. Idempotent.
 */
export function startPool(options: PoolOptions = {}): Pool {
  if (defaultPool && !defaultPool.closed) return defaultPool;
  const inherited = process.env[SEGMENT_ENV];
  if (inherited) {
    try {
      const pool = remember(new Pool(native(() => binding.openPool(inherited, nativeConfig(options, false)))));
      defaultPool = pool;
      installExitHooks();
      return pool;
    } catch (error) {
      // The parent's pool is gone (it exited): start a fresh one below.
      if (!(error instanceof ArrayPoolError && error.code === 'ERR_SEGMENT_NOT_FOUND')) throw error;
    }
  }
  const pool = remember(new Pool(native(() => binding.createPool(nativeConfig(options, true)))));
  defaultPool = pool;
  process.env[SEGMENT_ENV] = pool.name;
  installExitHooks();
  return pool;
}

/** The process's pool, started on demand. */
export function getPool(): Pool {
  return defaultPool && !defaultPool.closed ? defaultPool : startPool();
}

let hooksInstalled = false;

/**
 * Leaving on exit. Finalizers do not run on process.exit(), on an uncaught
 * exception or on a signal, so the process leaves its pools explicitly:
 * its references are dropped and the creator unlinks the segment name.
 * Worker threads share their process's pools and install nothing.
 */
function installExitHooks(): void {
  if (hooksInstalled || !isMainThread) return;
  hooksInstalled = true;
  const leave = (): void => binding.shutdown();
  process.on('exit', leave);
  process.on('uncaughtExceptionMonitor', () => {
    // Only when the exception is about to end the process.
    if (process.listenerCount('uncaughtException') === 0) leave();
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = (): void => {
      // Another handler owns this signal: it decides whether to exit, and
      // the 'exit' hook cleans up if it does.
      if (process.listenerCount(signal) > 1) return;
      leave();
      process.removeListener(signal, onSignal);
      // Re-raise so the process ends with the signal's usual status.
      process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}
