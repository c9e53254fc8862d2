/**
 * TransferableArray: a typed array living in a pool block, whose structured
 * clone is its handle. Its only own enumerable property is the handle in
 * the compact form (`__arraypool__`, see handle.ts); the handle's fields are
 * getters on the prototype, and the view and the reference live in private
 * fields.
 *
 * Blocks whose handle never left the process (issue 12): on an array made
 * here, `__arraypool__` is an own enumerable getter. Structured clone, JSON
 * and spreading read it, and the first read tells the binding that the
 * block's handle may have left this process (`markEscaped`, per block: any
 * view of it). Reading `generation` does the same, since a handle built by
 * hand needs it (a handle without the generation attaches nothing). Until
 * then the block's last release in this process (`release()` or GC) frees
 * it even with `transferRequired: true`, since no other process can be
 * waiting for it. `toHandle()` marks it too. The library's own accesses
 * (subarray, revive's walk, inspect) use the private fields and mark
 * nothing; the channels mark just before a message leaves.
 *
 * An array attached from a handle (revive, the channels' decoder) has a
 * plain data property instead, holding the string it arrived as: its block
 * is already known to other processes, so there is nothing to mark, and a
 * getter would only cost a defineProperty per revive.
 */

import { constants as bufferConstants } from 'node:buffer';
import { inspect } from 'node:util';
import { isMainThread } from 'node:worker_threads';

import * as binding from '#binding';
import { ArrayPoolError, native } from './errors.js';
import { DTYPES, dtypeOf, isDType, viewExtent, viewFacts, type DType, type DTypeArrays, type PoolTypedArray } from './dtypes.js';
import {
  HANDLE_FORMAT,
  checkShape,
  compactHandle,
  handleFormat,
  looksLikeHandle,
  ownData,
  parseHandle,
  show,
  type CompactHandle,
  type HandleFields,
  type TransferableHandle,
} from './handle.js';
import { getPool, poolById, poolByName, type Pool } from './pool.js';
import { adoptIntoScope } from './scope.js';
import { NOT_A_LEAF, walkMessage, type Leaf } from './walk.js';

// One view can be as large as one Buffer on this Node (4 GiB on 20, 2^53 - 1 from 22).
binding.setMaxViewBytes(bufferConstants.MAX_LENGTH);

/**
 * `[viewId, offset, generation]`, written by the binding (saves an object
 * per call); `attachCompact` writes `[..., byteOffset, byteLength, dtype
 * index, pool id, ndims, d0, d1, ...]` after them (up to 32 dimensions).
 */
const out = new Float64Array(3 + 5 + 32);

/** The dtypes by the index `attachCompact` writes (the order of DTYPES, as in the core's COMPACT_DTYPES). */
const DTYPE_BY_INDEX = Object.keys(DTYPES) as DType[];

/** `[poolId, offset, generation, byteOffset]`, written by `locateView`. */
const located = new Float64Array(4);

/**
 * Lazy views: `makeTransferable` and `revive` take the block reference
 * without making its external ArrayBuffer (the costly part of a view: a
 * Node Buffer with a native finalizer, run through an immediate); the
 * buffer is made when `.array` (or `toArray()`) is first read, and from then
 * on its finalizer owns the reference, as for every other view. Until then
 * the reference belongs to the TransferableArray: `release()` drops it, and
 * if the object is collected first, this registry does.
 */
const unviewed = new FinalizationRegistry<number>((viewId) => {
  try {
    binding.release(viewId, undefined);
  } catch {
    // Nothing to throw to from a finalization callback; the reference then
    // goes when the pool closes or the process exits.
  }
});

/**
 * Lazy arrays made since the last microtask checkpoint, not yet in
 * `unviewed`: registering costs ~1–1.5 µs of a cold revive + release (a
 * weak cell, and the unregister token's table entry and lookup), and most
 * arrays are released, read or forwarded before the task that made them
 * ends. The ones still lazy and held then are registered at the checkpoint
 * (`registerLazyArrays`); until then this list holds them, so none can be
 * collected unregistered.
 */
let unregistered: TransferableArray[] = [];
/** Most arrays `unregistered` holds before it is flushed without waiting for the checkpoint. */
const MAX_UNREGISTERED = 1024;
/** Registers the arrays of `unregistered` that are still lazy (set in TransferableArray's static block). */
let registerLazyArrays: () => void;

export interface TransferOptions {
  /**
   * Default true: the block survives this process's last reference until
   * some other process has attached it (so a worker's result outlives the
   * worker's GC). False: freed as soon as nobody references it.
   */
  transferRequired?: boolean;
  /** Dimensions (default `[length]`); their product must equal the length. */
  shape?: readonly number[];
}

/** @internal The compact handle (what crosses a channel), without marking the block as having left the process. */
export let unmarkedHandle: (t: TransferableArray) => CompactHandle;
/** @internal The handle's fields, without marking the block. */
export let handleFieldsOf: (t: TransferableArray) => HandleFields;
/** @internal Marks the block as having left the process (what `toHandle()` does). */
export let markSent: (t: TransferableArray) => void;
/** @internal The view if it was made (a lazy view's is not, until `.array` is read). */
export let madeView: (t: TransferableArray) => PoolTypedArray | undefined;

export class TransferableArray<T extends PoolTypedArray = PoolTypedArray> {
  /**
   * The handle in the compact form (handle.ts): the only own enumerable
   * property, so the array's clone is `{ __arraypool__: '2:...' }`. On an
   * array made here, a getter: reading it marks the block's handle as having
   * left the process (see the module doc).
   */
  declare readonly __arraypool__: string;
  readonly #segment: string;
  readonly #offset: number;
  readonly #generation: number;
  readonly #byteOffset: number;
  readonly #byteLength: number;
  readonly #dtype: DType;
  /** A private copy, frozen when first given out. */
  readonly #shape: number[];
  #shapeFrozen = false;
  /** The compact string, made when first needed. */
  #compact: string | undefined;
  /** This wrapper told the binding that the block's handle may leave (or did not need to). */
  #escaped: boolean;
  /** Undefined until the view is made (a lazy view, see `unviewed`). */
  #array: T | undefined;
  #buffer: ArrayBuffer | undefined;
  #viewId: number;
  #pool: Pool;
  #released = false;
  /** In `unviewed` (see `unregistered`). */
  #registered = false;

  /**
   * The `__arraypool__` property of every instance made here: one shared
   * descriptor, so that every such instance keeps the same hidden class.
   */
  static readonly #handleProperty: PropertyDescriptor = {
    enumerable: true,
    configurable: false,
    get(this: TransferableArray): string {
      if (!this.#escaped) this.#markEscaped();
      return this.#compactHandle();
    },
  };

  /**
   * @internal Use makeTransferable, empty, zeros or revive. `shape` must be
   * the caller's private array (it is kept). `escaped`: the block may
   * already be known to other processes (attached from a handle), so
   * reading the handle needs no mark; `compact` is then the string it
   * arrived as, if it names this pool as `pool.name` does. `buffer`
   * undefined: a lazy view, whose reference (view id in `out[0]`) this
   * object owns until `.array`.
   */
  constructor(pool: Pool, buffer: ArrayBuffer | undefined, handle: HandleFields, escaped = false, compact?: string) {
    this.#segment = handle.segment;
    this.#offset = handle.offset;
    this.#generation = handle.generation;
    this.#byteOffset = handle.byteOffset;
    this.#byteLength = handle.byteLength;
    this.#dtype = handle.dtype;
    this.#shape = handle.shape as number[];
    this.#escaped = escaped;
    this.#compact = compact;
    this.#pool = pool;
    this.#buffer = buffer;
    this.#viewId = out[0] as number;
    if (buffer === undefined && !isMainThread) {
      // A worker thread's isolate runs no FinalizationRegistry callback at
      // teardown (napi finalizers of made views do run): a lazy view that
      // was never read would keep its reference until the pool closed.
      try {
        this.#view();
      } catch (error) {
        // Nobody else owns the reference yet. The view's error is the one
        // to report.
        try {
          native(() => binding.release(this.#viewId, undefined));
        } catch {
          // It then goes when the pool closes.
        }
        throw error;
      }
    } else if (buffer === undefined) {
      // Flushed at the checkpoint, or at once when a long synchronous
      // stretch has made many: the list must not keep thousands of
      // released arrays alive until the task ends.
      const pending = unregistered.push(this);
      if (pending === 1) queueMicrotask(registerLazyArrays);
      else if (pending >= MAX_UNREGISTERED) registerLazyArrays();
    } else {
      const info = DTYPES[handle.dtype];
      this.#array = info.view(buffer, 0, handle.byteLength / info.bytesPerElement) as T;
    }
    // After the reference has its owner (above), so that nothing here can leak it.
    if (escaped) {
      // Nothing to mark (see the module doc): a data property, so that
      // reviving costs no defineProperty (a runtime call) and serializing
      // the array calls no getter. The prototype's own `__arraypool__` (see
      // the static block) makes this an own property whatever
      // Object.prototype holds.
      this.__arraypool__ = this.#compactHandle();
    } else {
      Object.defineProperty(this, '__arraypool__', TransferableArray.#handleProperty);
    }
    adoptIntoScope(this);
  }

  /** The pool's name (a locator for anonymous pools). */
  get segment(): string {
    return this.#segment;
  }

  /** The block's offset in the pool. */
  get offset(): number {
    return this.#offset;
  }

  /**
   * The block's generation (a freed and reused block gets a new one). Reading
   * it marks the block's handle as having left the process, as reading
   * `__arraypool__` does: a handle built by hand needs it.
   */
  get generation(): number {
    if (!this.#escaped) this.#markEscaped();
    return this.#generation;
  }

  /** Where this array starts in the block. */
  get byteOffset(): number {
    return this.#byteOffset;
  }

  get byteLength(): number {
    return this.#byteLength;
  }

  get dtype(): DType {
    return this.#dtype;
  }

  /** The dimensions (a frozen array). */
  get shape(): readonly number[] {
    if (!this.#shapeFrozen) {
      Object.freeze(this.#shape);
      this.#shapeFrozen = true;
    }
    return this.#shape;
  }

  /** The typed array: a view of shared memory (no copy). Empty once released. */
  get array(): T {
    return this.#array ?? this.#view();
  }

  /** Makes a lazy view's ArrayBuffer (its finalizer takes the reference over); a released one's array is empty. */
  #view(): T {
    const info = DTYPES[this.#dtype];
    if (this.#released) {
      // Detached, like a released view's array (copying it is then refused too).
      const empty = new ArrayBuffer(0);
      this.#array = info.view(empty, 0, 0) as T;
      structuredClone(empty, { transfer: [empty] });
      return this.#array;
    }
    const buffer = native(() => binding.viewOf(this.#viewId));
    if (this.#registered) unviewed.unregister(this);
    this.#buffer = buffer;
    this.#array = info.view(buffer, 0, this.#byteLength / info.bytesPerElement) as T;
    return this.#array;
  }

  get released(): boolean {
    return this.#released;
  }

  /** @internal */
  get pool(): Pool {
    return this.#pool;
  }

  /** @internal */
  get poolId(): number {
    return this.#pool.id;
  }

  /**
   * Tells the binding that this block's handle may leave the process, so it
   * keeps the transferred rule. Done even once this view is released: other
   * views of the block in this process may still hold it (a block no longer
   * held is nothing to protect, and the binding then does nothing). Marked
   * only on success: if the call throws, so does the serialization.
   */
  #markEscaped(): void {
    native(() => binding.markEscaped(this.#pool.id, this.#offset, this.#generation));
    this.#escaped = true;
  }

  #compactHandle(): string {
    return (this.#compact ??= compactHandle(this.#handleOf()));
  }

  /** Shows the handle fields without reading the getter (so without marking the block). */
  [inspect.custom](depth: number, options: object, show: typeof inspect): string {
    const fields = { ...this.#handleOf(), released: this.#released };
    return `TransferableArray ${depth < 0 ? '{...}' : show(fields, { ...options, depth: depth - 1 } as never)}`;
  }

  /**
   * Drops this view's reference now and detaches it: `array` (and every
   * typed array made from it) becomes length 0, never a dangling view of
   * memory that may be reused. Idempotent. Without it, GC does the same.
   */
  release(): void {
    if (this.#released) return;
    if (this.#buffer === undefined) {
      // A lazy view: if the binding fails, the array stays live (its
      // reference held, GC still releases it).
      native(() => binding.release(this.#viewId, undefined));
      this.#released = true;
      if (this.#registered) unviewed.unregister(this);
      return;
    }
    this.#released = true;
    native(() => binding.release(this.#viewId, this.#buffer));
  }

  [Symbol.dispose](): void {
    this.release();
  }

  #live(): void {
    if (this.#released) throw new ArrayPoolError('ERR_NOT_HELD', 'this TransferableArray was released');
  }

  /**
   * Another transferable sharing this block: elements `[begin, end)` along
   * the first axis. The arguments are read as `TypedArray.prototype.subarray`
   * reads them: converted to numbers, NaN is 0, fractions are truncated,
   * negative indices count from the end, everything is clamped to the rows;
   * `end` undefined is the last row. Writes through either are seen by both.
   */
  subarray(begin?: number, end?: number): TransferableArray<T> {
    this.#live();
    const rows = this.#shape[0] ?? 0;
    // %TypedArray%.prototype.subarray's steps; a NaN used to reach the
    // native call as a byte offset (ERR_INVALID_HANDLE).
    const index = (value: unknown, name: string): number => {
      const i = toIntegerOrInfinity(value, name);
      return i < 0 ? Math.max(rows + i, 0) : Math.min(i, rows);
    };
    const from = index(begin, 'begin');
    const to = Math.max(from, end === undefined ? rows : index(end, 'end'));
    const rowBytes = rows === 0 ? 0 : this.#byteLength / rows;
    const shape = [to - from, ...this.#shape.slice(1)];
    const byteOffset = this.#byteOffset + from * rowBytes;
    const byteLength = (to - from) * rowBytes;
    const buffer = native(() =>
      binding.share(this.#pool.id, this.#offset, this.#generation, byteOffset, byteLength, out),
    );
    return new TransferableArray<T>(this.#pool, buffer, { ...this.#handleOf(), byteOffset, byteLength, shape });
  }

  /** A new block with a copy of the data. */
  copy(options: Pick<TransferOptions, 'transferRequired'> = {}): TransferableArray<T> {
    this.#live();
    return makeTransferable(this.array, { ...options, shape: this.#shape });
  }

  /** A private copy on the JS heap (not shared). */
  toArray(): T {
    this.#live();
    const info = DTYPES[this.#dtype];
    const copy = info.view(new ArrayBuffer(this.#byteLength), 0, this.#byteLength / info.bytesPerElement);
    new Uint8Array(copy.buffer, copy.byteOffset, copy.byteLength).set(
      new Uint8Array(this.array.buffer, 0, this.#byteLength),
    );
    return copy as T;
  }

  /**
   * The handle in the object form (handle.ts; the array's own clone is the
   * same handle in the compact form). Marks the block's handle as having
   * left the process: it keeps the transferred rule (in flight after the
   * last release until some process revives it).
   */
  toHandle(): TransferableHandle {
    if (!this.#escaped) this.#markEscaped();
    return { __arraypool__: HANDLE_FORMAT, ...this.#handleOf() };
  }

  static {
    registerLazyArrays = () => {
      const made = unregistered;
      unregistered = [];
      for (let i = 0; i < made.length; i++) {
        const t = made[i] as TransferableArray;
        if (t.#released || t.#buffer !== undefined) continue;
        try {
          unviewed.register(t, t.#viewId, t);
        } catch (error) {
          // Out of memory, in practice: the rest wait for the next flush
          // (registering runs no JS, so nothing joined the list meanwhile).
          unregistered = made.slice(i);
          queueMicrotask(registerLazyArrays);
          throw error;
        }
        t.#registered = true;
      }
    };
    // A writable data property here makes `this.__arraypool__ = ...` create
    // an own property on the instance: a setter or a read-only
    // `__arraypool__` planted on Object.prototype is never reached.
    Object.defineProperty(TransferableArray.prototype, '__arraypool__', {
      value: undefined,
      writable: true,
      enumerable: false,
      configurable: false,
    });
    // The channels encode a message before they know it will be sent: they
    // take the handle without marking, and mark just before it leaves.
    unmarkedHandle = (t) => ({ __arraypool__: t.#compactHandle() });
    handleFieldsOf = (t) => t.#handleOf();
    markSent = (t) => {
      if (!t.#escaped) t.#markEscaped();
    };
    madeView = (t) => t.#array;
  }

  #handleOf(): HandleFields {
    return {
      segment: this.#segment,
      offset: this.#offset,
      generation: this.#generation,
      byteOffset: this.#byteOffset,
      byteLength: this.#byteLength,
      dtype: this.#dtype,
      shape: this.shape,
    };
  }
}

/**
 * ECMAScript's ToIntegerOrInfinity: ToNumber (a string, null, an object's
 * valueOf), then NaN and -0 are 0 and fractions are truncated; ±Infinity
 * stay. A BigInt or a Symbol, where a TypedArray throws a TypeError, is
 * ERR_INVALID_ARG.
 */
function toIntegerOrInfinity(value: unknown, name: string): number {
  if (typeof value === 'bigint' || typeof value === 'symbol') {
    throw new ArrayPoolError('ERR_INVALID_ARG', `${name} must be a number, got ${show(value)}`);
  }
  const n = +(value as number);
  return Number.isNaN(n) || n === 0 ? 0 : Math.trunc(n);
}

/** The `transferRequired` option: a boolean, default true (anything else used to reach the binding as a napi type error). */
function transferRequiredOf(options: unknown, what: string): boolean {
  if (options === undefined) return true;
  if (typeof options !== 'object' || options === null) {
    throw new ArrayPoolError('ERR_INVALID_ARG', `${what}: options must be an object, got ${show(options)}`);
  }
  const value = (options as TransferOptions).transferRequired;
  if (value === undefined) return true;
  if (typeof value !== 'boolean') {
    throw new ArrayPoolError('ERR_INVALID_ARG', `${what}: transferRequired must be a boolean, got ${show(value)}`);
  }
  return value;
}

/**
 * Allocates a block for a shape already checked (`dims`, `size` from
 * checkShape), with a copy of `source` (of that many bytes) if given: one
 * native call allocates and copies, and makes no view yet (a lazy view,
 * `buffer` undefined; see `unviewed`).
 */
function allocate(
  dtype: DType,
  dims: readonly number[],
  size: number,
  transferRequired: boolean,
  source?: PoolTypedArray,
): { pool: Pool; buffer: ArrayBuffer | undefined; handle: HandleFields } {
  const byteLength = size * DTYPES[dtype].bytesPerElement;
  const pool = getPool();
  // The block's handle is taken not to have left this process until the
  // TransferableArray's getter or toHandle() marks it.
  // (An empty array has nothing to copy, and napi may give it no data pointer.)
  const buffer = native((): ArrayBuffer | undefined => {
    if (source === undefined || byteLength === 0) return binding.allocate(pool.id, byteLength, transferRequired, out);
    binding.allocateCopy(pool.id, source, byteLength, transferRequired, out);
    return undefined;
  });
  return {
    pool,
    buffer,
    handle: {
      segment: pool.name,
      offset: out[1] as number,
      generation: out[2] as number,
      byteOffset: 0,
      byteLength,
      dtype,
      shape: dims,
    },
  };
}

/**
 * Copies a typed array (or Buffer) into the pool once and returns it as a
 * TransferableArray, whose `.array` is a zero-copy view of the block.
 * Everything that can be wrong with the input is found before the block is
 * allocated: nothing can throw between the allocation and the copy, which
 * would leave the block in flight for a receiver that never comes.
 */
export function makeTransferable<T extends PoolTypedArray>(
  array: T,
  options: TransferOptions = {},
): TransferableArray<T> {
  const facts = viewFacts(array, 'makeTransferable');
  const transferRequired = transferRequiredOf(options, 'makeTransferable');
  const given = options.shape;
  // A typed array's length is a safe integer: its own shape needs no check.
  const { dims, size } = given === undefined ? { dims: [facts.length], size: facts.length } : checkShape(given);
  if (size !== facts.length) {
    throw new ArrayPoolError('ERR_INVALID_SHAPE', `shape [${dims.join(', ')}] has ${size} elements, the array ${facts.length}`);
  }
  // The binding copies the array's bytes (its real extent, as napi reads
  // it: own `length`/`byteLength` properties cannot change it).
  const { pool, buffer, handle } = allocate(facts.dtype, dims, size, transferRequired, array);
  return new TransferableArray<T>(pool, buffer, handle);
}

function allocateNew<D extends DType>(dtype: D, shape: number | readonly number[], options: TransferOptions): TransferableArray<DTypeArrays[D]> {
  if (!isDType(dtype)) {
    throw new ArrayPoolError('ERR_UNSUPPORTED_DTYPE', `unknown dtype ${show(dtype)}`);
  }
  const transferRequired = transferRequiredOf(options, dtype);
  const { dims, size } = checkShape(typeof shape === 'number' ? [shape] : shape);
  const { pool, buffer, handle } = allocate(dtype, dims, size, transferRequired);
  return new TransferableArray<DTypeArrays[D]>(pool, buffer, handle);
}

/** An uninitialised array straight in the pool: the zero-copy way to produce a result. */
export function empty<D extends DType>(
  dtype: D,
  shape: number | readonly number[],
  options: Pick<TransferOptions, 'transferRequired'> = {},
): TransferableArray<DTypeArrays[D]> {
  return allocateNew(dtype, shape, options);
}

/** Like `empty`, filled with zeros. */
export function zeros<D extends DType>(
  dtype: D,
  shape: number | readonly number[],
  options: Pick<TransferOptions, 'transferRequired'> = {},
): TransferableArray<DTypeArrays[D]> {
  const t = allocateNew(dtype, shape, options);
  new Uint8Array(t.array.buffer, t.array.byteOffset, t.byteLength).fill(0);
  return t;
}

/**
 * If `view` is a typed array (or Buffer) over pool memory — `t.array` of a
 * TransferableArray, or any typed array made on its buffer — returns a new
 * TransferableArray naming exactly that range of the block (no copy, one
 * more reference). Otherwise undefined. Lets code that only kept the plain
 * array (a task's return value) send it without copying.
 */
export function toTransferable<T extends PoolTypedArray>(view: T): TransferableArray<T> | undefined {
  const dtype = dtypeOf(view);
  if (dtype === undefined) return undefined;
  // The real extent: an own `byteLength` or `length` on the view must not
  // stretch the range shared from the block, nor give it a wrong shape.
  const { byteLength, length } = viewExtent(view);
  if (byteLength === 0 || !native(() => binding.locateView(view, located))) return undefined;
  const pool = poolById(located[0] as number);
  if (pool === undefined) return undefined;
  const [, offset, generation, byteOffset] = located as unknown as [number, number, number, number];
  // A typed array made at an odd offset of the block (e.g. a Float32Array
  // over a Uint8Array slice) cannot be re-made from a handle: not a pool view
  // for our purposes, so callers copy it instead.
  if (byteOffset % DTYPES[dtype].bytesPerElement !== 0) return undefined;
  const buffer = native(() => binding.share(pool.id, offset, generation, byteOffset, byteLength, out));
  return new TransferableArray<T>(pool, buffer, {
    segment: pool.name,
    offset,
    generation,
    byteOffset,
    byteLength,
    dtype,
    shape: [length],
  });
}

/**
 * A handle, in either form, as the object form, checked as `revive` checks
 * its fields but not attached: to look at them (e.g. to find the block in
 * `pool.blocks()`). Whether its segment names a pool is known only when it
 * is attached. A live TransferableArray gives its own handle (marking
 * nothing: reading is not sending). ERR_INVALID_HANDLE for anything else.
 */
export function readHandle(value: unknown): TransferableHandle {
  if (value instanceof TransferableArray) return { __arraypool__: HANDLE_FORMAT, ...handleFieldsOf(value) };
  if (!looksLikeHandle(value)) {
    throw new ArrayPoolError('ERR_INVALID_HANDLE', `invalid handle: expected a handle, got ${show(value)}`);
  }
  const { compact: _compact, ...fields } = parseHandle(value);
  return { __arraypool__: HANDLE_FORMAT, ...fields };
}

/**
 * The fast path of reviving a compact handle: one native call reads the
 * string, finds the pool open in this process that it names and attaches
 * the block, when the string is a handle in its one spelling; undefined,
 * with nothing taken, for any other string (the slow path then reads it and
 * gives a malformed one its error).
 */
function attachCompact(text: string): TransferableArray | undefined {
  if (!native(() => binding.attachCompact(text, out))) return undefined;
  const pool = poolById(out[6] as number) ?? openInThisIsolate(out);
  const ndims = out[7] as number;
  const shape: number[] = [];
  for (let i = 0; i < ndims; i++) shape.push(out[8 + i] as number);
  const handle: HandleFields = {
    segment: pool.name,
    offset: out[1] as number,
    generation: out[2] as number,
    byteOffset: out[3] as number,
    byteLength: out[4] as number,
    dtype: DTYPE_BY_INDEX[out[5] as number] as DType,
    shape,
  };
  return new TransferableArray(pool, undefined, handle, true, text);
}

/** @internal Test hooks (tests only): runs where a race with another thread can interleave. */
export const testHooks: { beforeOpenInIsolate?: () => void } = {};

/**
 * The pool `attachCompact` attached from (`written[6]`), open in the
 * process (another worker thread opened it) but not yet in this isolate:
 * opens it here, as the slow path would. The reference just taken (view id
 * `written[0]`) is kept: given back, it could free a block whose sender has
 * let it go, and the slow path would then find the handle stale. If the
 * pool was closed meanwhile (by the thread that had it open) and opens here
 * as a new attachment, the block is taken again through that one before
 * the first reference goes, so that it never drops to no reference;
 * `written[0]` is then the new view id. The reference is released if
 * nothing can be opened or attached here. `written` is otherwise left as
 * it was.
 */
function openInThisIsolate(written: Float64Array): Pool {
  const saved = written.slice();
  const poolId = saved[6] as number;
  const first = saved[0] as number;
  let pool: Pool;
  try {
    testHooks.beforeOpenInIsolate?.();
    const opened = poolByName(native(() => binding.poolName(poolId)));
    if (opened.id !== poolId) {
      native(() => binding.attachUnviewed(opened.id, saved[1] as number, saved[2] as number, saved[3] as number, saved[4] as number, written));
      saved[0] = written[0] as number;
    }
    pool = opened;
  } catch (error) {
    written.set(saved);
    try {
      native(() => binding.release(first, undefined));
    } catch {
      // The first error is the one to report; this reference goes when
      // its pool closes.
    }
    throw error;
  }
  written.set(saved);
  // Throws only for a view id that is not an integer, which `first` is not.
  if (saved[0] !== first) native(() => binding.release(first, undefined));
  return pool;
}

/**
 * Turns one received handle into a live TransferableArray (marks the block
 * transferred). `format`: its own data property `__arraypool__`, when the
 * caller has read it already (one descriptor read less per handle).
 */
export function attachHandle(value: Record<string, unknown>, format: unknown = ownData(value, '__arraypool__')): TransferableArray {
  if (typeof format === 'string') {
    const attached = attachCompact(format);
    if (attached !== undefined) return attached;
  }
  const h = parseHandle(value);
  let pool: Pool;
  try {
    pool = poolByName(h.segment);
  } catch (error) {
    // A name that could never be a pool's (e.g. '../../etc/passwd') is a
    // malformed handle; a well-formed name that is gone stays ERR_SEGMENT_NOT_FOUND.
    if (error instanceof ArrayPoolError && error.code === 'ERR_INVALID_NAME') {
      throw new ArrayPoolError('ERR_INVALID_HANDLE', `invalid handle: ${error.message}`);
    }
    throw error;
  }
  // A lazy view (see `unviewed`): a receiver that only forwards or drops the
  // array never pays for its ArrayBuffer.
  native(() => binding.attachUnviewed(pool.id, h.offset, h.generation, h.byteOffset, h.byteLength, out));
  // The pool's own spelling of its name (a handle may say `/arraypool-...`);
  // a compact string that spells it so is the array's handle as it is.
  // Attached: the block is transferred, so its handle needs no mark.
  if (h.segment === pool.name) return new TransferableArray(pool, undefined, h, true, h.compact);
  return new TransferableArray(pool, undefined, { ...h, segment: pool.name }, true);
}

/**
 * Walks a received message (plain objects, arrays, Maps, Sets; any depth;
 * cycles allowed) and replaces every handle with a live TransferableArray,
 * attaching its pool on demand. Containers are updated in place.
 */
export function revive<T>(value: T): T {
  const attached: TransferableArray[] = [];
  try {
    return reviveMessage(value, (node) => {
      const format = handleFormat(node);
      if (format === undefined) return NOT_A_LEAF;
      const live = attachHandle(node as Record<string, unknown>, format);
      attached.push(live);
      return live;
    }) as T;
  } catch (error) {
    // A bad handle midway: what was attached so far is nobody's.
    for (const t of attached) t.release();
    throw error;
  }
}

/**
 * @internal The walk behind `revive` and the channels' decoder (walk.ts),
 * leaving live TransferableArrays as they are, unasked: a message revived
 * twice attaches nothing the second time.
 */
export function reviveMessage(value: unknown, leaf: Leaf): unknown {
  return walkMessage(value, leaf, isLive);
}

const isLive = (node: object): boolean => node instanceof TransferableArray;
