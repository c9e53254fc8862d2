/**
 * Pools as seen from JS: creating or inheriting the process's pool
 * (`startPool`), opening other pools on demand by name, and leaving them
 * cleanly when the process ends.
 *
 * The default pool is anonymous memory (memfd): the kernel frees it with
 * the last process holding it, so there is nothing to clean up and no
 * signal handler. Children find it through `ARRAYPOOL_SEGMENT`, which each
 * member sets to a locator naming itself first (`name@pid:fd,...`), so a
 * grandchild attaches through its parent even after the creator is gone.
 */
import { isMainThread } from 'node:worker_threads';

import * as binding from '#binding';
import { ArrayPoolError, native } from './errors.js';

/** The variable through which a pool's locator reaches the processes forked after it. */
export const SEGMENT_ENV = 'ARRAYPOOL_SEGMENT';
/** The variable that sets the default pool size (`'512M'`, `'4G'`, bytes). */
export const SIZE_ENV = 'ARRAYPOOL_SIZE';

/** What backs a pool: anonymous memory (default) or a named file in /dev/shm. */
export type Backing = 'memfd' | 'shm';

export interface PoolOptions {
  /** Segment size in bytes or as a string: `'512M'`, `'4G'`, `'64KiB'`. Default: `ARRAYPOOL_SIZE`, else half of memory (memfd) or of /dev/shm (shm); sparse: pages are used only when touched. */
  size?: number | string;
  /**
   * `'memfd'` (default): anonymous shared memory, freed by the kernel when
   * the last process holding it exits, however it dies; bounded by memory,
   * not by /dev/shm; other processes of the same user attach through
   * /proc. `'shm'`: a named file in /dev/shm that unrelated processes
   * attach by name, also after the creator has gone; removed by the
   * creator's `close()` or exit, or by `arraypool gc`. Creation only.
   */
  backing?: Backing;
  /** Name of a `'shm'` pool (`arraypool-` + up to 48 of `[A-Za-z0-9_-]`); implies `backing: 'shm'`. Default: random. */
  name?: string;
  /** Freed blocks at least this large give their pages back to the system (default 256 MiB). */
  punchThreshold?: number;
  /**
   * Free bytes the pool keeps backed by memory for fast reuse (default
   * 256 MiB): beyond them, freed blocks of 1 MiB or more give their pages
   * back too, so a spike does not keep its memory. Per process.
   */
  warmFreeBytes?: number;
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
  /**
   * Small blocks that processes freed and keep for their next allocation of
   * the same size (not counted in `usedBytes`/`liveBlocks`/`freeBytes`);
   * given back when the pool is full or the process leaves.
   */
  cachedBytes: number;
  cachedBlocks: number;
  inFlightBlocks: number;
  processes: number;
  lockTakeovers: number;
  /** Bytes of the segment backed by memory now (pages reserved or touched and not given back). */
  backedBytes: number;
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

/** A process holding a block (see `Pool.blocks`). */
export interface BlockHolder {
  /** Its slot in the pool's process table (0 to 63). */
  slot: number;
  /** The pid the slot recorded (display only: pids are reused). */
  pid: number;
  /** Whether the process lives; a dead holder's reference goes at the next reap. */
  alive: boolean;
}

/** One used block of a pool (see `Pool.blocks`). */
export interface BlockInfo {
  /** Where the block starts in the segment (a handle's `offset`). */
  offset: number;
  /** Whole block in bytes, its 64-byte header and padding included. */
  size: number;
  /** Bytes requested by the allocation (the array's bytes). */
  dataLen: number;
  /** Unique per allocation (a handle's `generation`). */
  generation: number;
  /**
   * Logical age: how many allocations the pool made after this one (0 for the newest). The
   * layout has no clock; see README, "Seeing what is in a pool".
   */
  age: number;
  /** The processes holding it (none: in flight). */
  holders: BlockHolder[];
  /** Freed only once some process attached it from a handle. */
  transferRequired: boolean;
  /** Some process attached it from a handle (`revive`). */
  transferred: boolean;
  /** Nobody holds it: it waits for a receiver to revive its handle. */
  inFlight: boolean;
  /** Being freed right now. */
  releasing: boolean;
  /** Freed into its holder's small-block cache: kept for that process's next allocation. */
  cached: boolean;
}

/** What `Pool.blocks()` returns. */
export interface BlockList {
  /** The first `limit` used blocks, by offset. */
  blocks: BlockInfo[];
  /** Used blocks in the pool, listed or not. */
  totalBlocks: number;
  /** Their bytes, headers included. */
  totalBytes: number;
  /** How many of them are in flight. */
  inFlightBlocks: number;
  /** How many of them are cached (`BlockInfo.cached`). */
  cachedBlocks: number;
  /** Used blocks not listed (over the limit). */
  omitted: number;
  /** The generation the next allocation gets (ages count from it). */
  nextGeneration: number;
}

export interface BlocksOptions {
  /** Most blocks listed (the rest are only counted); default 10 000. */
  limit?: number;
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

/** How often queued releases are retried (see `Pool`). */
const QUEUED_RELEASE_RETRY_MS = 100;

/**
 * Every how many flush ticks a pool opened only to revive handles is asked
 * whether it can be closed (see `Pool`): ~1 s. The question takes the
 * segment lock when this process holds nothing in the pool.
 */
const IDLE_CHECK_TICKS = 10;

export class Pool {
  /** The pool's name: `arraypool-memfd-<id>` (anonymous) or its /dev/shm name. Handles carry it. */
  readonly name: string;
  /** What backs it. */
  readonly backing: Backing;
  /** @internal */
  readonly id: number;
  #closed = false;
  #ticks = 0;
  /**
   * Releases never wait for the pool lock (a stopped or slow holder must not
   * stall the event loop): one that finds it busy is queued natively and
   * done by the next operation, or by this timer. Unref'd; the native call
   * returns at once when nothing is queued. It also closes a pool opened
   * only to receive once it has become idle (`receivedOnly`).
   */
  readonly #flushTimer: ReturnType<typeof setInterval>;

  /** @internal */
  constructor(id: number) {
    this.id = id;
    this.name = native(() => binding.poolName(id));
    this.backing = native(() => binding.poolBacking(id)) as Backing;
    this.#flushTimer = setInterval(() => {
      try {
        binding.flushReleases(id);
      } catch {
        // A pool closed natively meanwhile: nothing left to flush here.
      }
      if (receivedOnly.has(this) && ++this.#ticks % IDLE_CHECK_TICKS === 0) closeIfIdle(this);
    }, QUEUED_RELEASE_RETRY_MS);
    this.#flushTimer.unref();
  }


  /** Whether this process created the pool (for `'shm'`: unlinks its name on close or exit). */
  get isCreator(): boolean {
    return native(() => binding.isCreator(this.id));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * What another process of this user passes to attach (as
   * `ARRAYPOOL_SEGMENT`, or to `startPool` through it): the name of a named
   * pool; for an anonymous one, `name@pid:fd,...` with this process first.
   */
  locator(): string {
    return native(() => binding.poolLocator(this.id, process.env[SEGMENT_ENV]));
  }

  stats(): PoolStats {
    return native(() => binding.stats(this.id));
  }

  /**
   * What is in the pool, block by block, for hunting leaks: every used block (live or in flight)
   * with its offset, size, holders, transfer state and logical age. One walk of the pool under
   * its lock (O(blocks)); at most `limit` blocks are listed, the rest counted.
   */
  blocks(options: BlocksOptions = {}): BlockList {
    const limit = options?.limit;
    if (limit !== undefined && !(Number.isSafeInteger(limit) && limit >= 0)) {
      throw new ArrayPoolError('ERR_INVALID_ARG', `blocks: limit must be a non-negative safe integer, got ${String(limit)}`);
    }
    const r = native(() => binding.poolBlocks(this.id, limit));
    return {
      blocks: r.blocks,
      totalBlocks: r.totalBlocks,
      totalBytes: r.totalBytes,
      inFlightBlocks: r.inFlightBlocks,
      cachedBlocks: r.cachedBlocks,
      omitted: r.omitted,
      nextGeneration: r.nextGeneration,
    };
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
   * Leaves the pool: for a `'shm'` pool the creator unlinks the name now
   * (attached processes and live views keep working), new allocations and
   * attaches fail with ERR_POOL_CLOSED, and the process's references go as
   * its views are released or collected.
   * Threads share their process's attachment: a thread's close() ends that
   * thread's use, and the process leaves when the last thread using it closes.
   * Once the process has left and no view of the pool is left, the segment
   * is unmapped (its memory goes back once no other process maps it), and
   * `stats()`, `blocks()`, `check()`, `reap()` and `locator()` throw
   * ERR_POOL_CLOSED.
   */
  close(): void {
    if (this.#closed) return;
    const created = this.isCreator;
    native(() => binding.closePool(this.id));
    this.#closed = true;
    clearInterval(this.#flushTimer);
    pools.delete(this.name);
    poolsById.delete(this.id);
    if (defaultPool === this) {
      defaultPool = undefined;
      // Children forked later must not look for a pool this process removed;
      // a pool inherited from the parent is still there for them.
      if (created && locatorName(process.env[SEGMENT_ENV]) === this.name) delete process.env[SEGMENT_ENV];
    }
  }
}

/**
 * Pools opened only because a handle named them (revive, a channel), not
 * by `startPool`: each is closed once nothing of it can reach this process
 * any more (`closeIfIdle`). Otherwise a long-lived receiver kept the pool
 * of every producer it ever heard from mapped, with its pages, after the
 * producers were gone.
 */
const receivedOnly = new WeakSet<Pool>();

/**
 * Closes a pool opened only to revive handles if nothing of it can reach
 * this process any more: this process holds nothing in it, no other
 * process is attached, and no block is in use or in flight (core
 * `Pool::idle_and_alone`). A handle of it that comes later opens it again
 * (and is stale if its block is gone). Whether it closed.
 */
function closeIfIdle(pool: Pool): boolean {
  if (!receivedOnly.has(pool) || pool.closed) return false;
  try {
    if (!binding.idleAndAlone(pool.id)) return false;
    pool.close();
    return true;
  } catch {
    // Closed natively meanwhile, or the lock is busy: asked again later.
    return false;
  }
}

const pools = new Map<string, Pool>();
const poolsById = new Map<number, Pool>();
let defaultPool: Pool | undefined;

/**
 * Records a pool this process opened, by name (for handles) and by id (for
 * `toTransferable`). In a worker thread, which has no exit hooks, the
 * binding closes this isolate's open of the pool when the thread ends
 * (unless `close()` came first): each isolate counts as one opener.
 */
function remember(pool: Pool): Pool {
  if (!isMainThread) {
    try {
      native(() => binding.closeAtTeardown(pool.id));
    } catch (error) {
      // Not remembered without it: this isolate's open would never be
      // given back. close() also stops the pool's flush timer; the first
      // error is the one to report.
      try {
        pool.close();
      } catch {
        // The open then goes when the process exits.
      }
      throw error;
    }
  }
  pools.set(pool.name, pool);
  poolsById.set(pool.id, pool);
  return pool;
}

/** @internal The open pool with this native id. */
export function poolById(id: number): Pool | undefined {
  const pool = poolsById.get(id);
  return pool && !pool.closed ? pool : undefined;
}

/** Names of anonymous pools start with this. */
const MEMFD_PREFIX = 'arraypool-memfd-';

/**
 * The name a pool is known by in this process's tables, from a name or a
 * locator (`name@pid:fd,...`): without the hints, and without the one
 * leading `/` that POSIX shared-memory names may carry and the core ignores
 * (`/arraypool-x` and `arraypool-x` are the same pool). Every lookup goes
 * through this, so one pool never gets two Pool objects (two native opens,
 * of which close() would end only one).
 * @internal
 */
export function poolKey(locator: string): string {
  const name = locator.split('@', 1)[0] ?? '';
  return name.startsWith('/') ? name.slice(1) : name;
}

function locatorName(locator: string | undefined): string | undefined {
  return locator === undefined ? undefined : poolKey(locator);
}

/**
 * The pool a name or locator names: the Pool this process already has open
 * under that name, or a new attachment. The string itself goes to the core
 * unchanged, which validates it (so `//arraypool-x` stays an invalid name).
 */
function openByName(locator: string, config: binding.PoolConfig, toReceive: boolean): Pool {
  // A handle names its pool as `pool.name` spells it, a key as it is.
  const known = pools.get(locator) ?? pools.get(poolKey(locator));
  if (known && !known.closed) {
    // `startPool` makes it the process's own: never closed for being idle.
    if (!toReceive) receivedOnly.delete(known);
    return known;
  }
  const pool = remember(new Pool(native(() => binding.openPool(locator, config))));
  if (toReceive) receivedOnly.add(pool);
  installExitHooks(pool);
  return pool;
}

function nativeConfig(options: PoolOptions, creating: boolean): binding.PoolConfig {
  const config: binding.PoolConfig = {};
  if (creating) {
    const size = options.size ?? process.env[SIZE_ENV];
    if (size !== undefined && size !== '') config.capacity = parseSize(size);
    config.backing = options.backing ?? (options.name !== undefined ? 'shm' : 'memfd');
    if (options.name !== undefined) config.name = options.name;
  }
  if (options.punchThreshold !== undefined) config.punchThreshold = options.punchThreshold;
  if (options.warmFreeBytes !== undefined) config.warmFreeBytes = options.warmFreeBytes;
  if (options.lockTimeoutMs !== undefined) config.lockTimeoutMs = options.lockTimeoutMs;
  return config;
}

/** The pool named `name`, opened on first use (a handle's segment): a received-only pool if this opens it. */
export function poolByName(name: string): Pool {
  return openByName(name, {}, true);
}

/**
 * @internal Closes the pools this process opened only to revive handles
 * that are idle (see `closeIfIdle`; each pool's flush timer does this about
 * once a second); returns their names.
 */
export function closeIdlePools(): string[] {
  const closed: string[] = [];
  for (const pool of [...pools.values()]) if (closeIfIdle(pool)) closed.push(pool.name);
  return closed;
}

/**
 * The initializer a worker calls at start-up (and what every other entry
 * point calls when nothing was started). In a process forked after its
 * parent started a pool, attaches to that pool (its locator arrives in
 * `ARRAYPOOL_SEGMENT`) and registers the process, unless `backing` or
 * `name` ask for another pool; a `name` given opens that named pool if it
 * exists. Otherwise creates a pool. Either way it exports the pool's locator, naming this process first, to
 * the processes forked afterwards. Idempotent: a second call returns the
 * same pool; a `backing` or `name` it does not match, or (in the process
 * that created it) another `size`, is an `ERR_INVALID_ARG`. A process that
 * attaches takes the pool's size as it is.
 */
export function startPool(options: PoolOptions = {}): Pool {
  if (options.backing !== undefined && options.backing !== 'memfd' && options.backing !== 'shm') {
    throw new ArrayPoolError('ERR_INVALID_ARG', `backing must be 'memfd' or 'shm', got ${JSON.stringify(options.backing)}`);
  }
  if (options.name !== undefined && options.backing === 'memfd') {
    throw new ArrayPoolError('ERR_INVALID_ARG', "a name is for backing: 'shm' pools; anonymous (memfd) pools are found by their id");
  }
  if (defaultPool && !defaultPool.closed) return checkMatches(defaultPool, options);
  const inherited = process.env[SEGMENT_ENV] || undefined;
  // The inherited pool, unless the options ask for another one; a name
  // given is opened if that pool exists, and created otherwise.
  const inheritedBacking = locatorName(inherited)?.startsWith(MEMFD_PREFIX) ? 'memfd' : 'shm';
  const wanted =
    inherited !== undefined &&
    (options.name === undefined || poolKey(options.name) === locatorName(inherited)) &&
    (options.backing === undefined || options.backing === inheritedBacking)
      ? inherited
      : options.name;
  let pool: Pool | undefined;
  if (wanted !== undefined) {
    try {
      // Already open here if a handle was revived before startPool ran.
      pool = openByName(wanted, nativeConfig(options, false), false);
    } catch (error) {
      // No member of the parent's pool is left (they all exited), or no pool
      // has that name yet: start a fresh one below.
      if (!(error instanceof ArrayPoolError && error.code === 'ERR_SEGMENT_NOT_FOUND')) throw error;
    }
  }
  pool ??= remember(new Pool(native(() => binding.createPool(nativeConfig(options, true)))));
  defaultPool = pool;
  const id = pool.id;
  process.env[SEGMENT_ENV] = native(() => binding.poolLocator(id, inherited));
  installExitHooks(pool);
  return pool;
}

/** `startPool(options)` on a started pool: options that ask for another pool are an error, not ignored. */
function checkMatches(pool: Pool, options: PoolOptions): Pool {
  const mismatch = (what: string): never => {
    throw new ArrayPoolError(
      'ERR_INVALID_ARG',
      `startPool: this process already uses pool ${pool.name} (${pool.backing}, ${pool.stats().capacityBytes} bytes), ${what}; ` +
        'close() it first to start another',
    );
  };
  if (options.backing !== undefined && options.backing !== pool.backing) mismatch(`not a '${options.backing}' pool`);
  if (options.name !== undefined && poolKey(options.name) !== pool.name) mismatch(`not ${JSON.stringify(options.name)}`);
  // The size is the creator's: a process that attached took the pool as it is.
  if (options.size !== undefined && pool.isCreator && parseSize(options.size) !== pool.stats().capacityBytes) {
    mismatch(`not ${JSON.stringify(options.size)}`);
  }
  return pool;
}

/** The process's pool, started on demand. */
export function getPool(): Pool {
  return defaultPool && !defaultPool.closed ? defaultPool : startPool();
}

let hooksInstalled = false;
let signalHooksInstalled = false;

/**
 * Leaving on exit. Finalizers do not run on process.exit() or on an
 * uncaught exception, so the process leaves its pools explicitly: its
 * references are dropped (other members need not reap them) and the
 * creator of a `'shm'` pool unlinks its name. Neither hook delays a signal.
 *
 * Signal listeners only for a `'shm'` pool this process created: its name
 * would outlive the process. A listener keeps Ctrl-C from ending a process
 * busy in synchronous code until that code ends, so anonymous pools, which
 * the kernel frees however the process dies, install none.
 * Worker threads share their process's pools and install nothing.
 */
function installExitHooks(pool: Pool): void {
  if (!isMainThread) return;
  if (!hooksInstalled) {
    hooksInstalled = true;
    process.on('exit', leave);
    process.on('uncaughtExceptionMonitor', () => {
      // Only when the exception is about to end the process.
      if (process.listenerCount('uncaughtException') === 0) leave();
    });
  }
  if (pool.backing === 'shm' && pool.isCreator) installSignalHooks();
}

function leave(): void {
  binding.shutdown();
}

function installSignalHooks(): void {
  if (signalHooksInstalled) return;
  signalHooksInstalled = true;
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
