/**
 * TransferableArray: a typed array living in a pool block, whose structured
 * clone is its handle. The handle fields are its only own enumerable
 * properties; the view and the reference live in private fields.
 */

import { constants as bufferConstants } from 'node:buffer';

import * as binding from '#binding';
import { ArrayPoolError, native } from './errors.js';
import { DTYPES, dtypeOf, isDType, type DType, type DTypeArrays, type PoolTypedArray } from './dtypes.js';
import { HANDLE_FORMAT, looksLikeHandle, parseHandle, shapeSize, type TransferableHandle } from './handle.js';
import { getPool, poolById, poolByName, type Pool } from './pool.js';
import { adoptIntoScope } from './scope.js';

// One view can be as large as one Buffer on this Node (4 GiB on 20, 2^53 - 1 from 22).
binding.setMaxViewBytes(bufferConstants.MAX_LENGTH);

/** `[viewId, offset, generation]`, written by the binding (saves an object per call). */
const out = new Float64Array(3);

/** `[poolId, offset, generation, byteOffset]`, written by `locateView`. */
const located = new Float64Array(4);

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

export class TransferableArray<T extends PoolTypedArray = PoolTypedArray> implements TransferableHandle {
  readonly __arraypool__: typeof HANDLE_FORMAT = HANDLE_FORMAT;
  readonly segment: string;
  readonly offset: number;
  readonly generation: number;
  readonly byteOffset: number;
  readonly byteLength: number;
  readonly dtype: DType;
  readonly shape: readonly number[];
  #array: T;
  #buffer: ArrayBuffer;
  #viewId: number;
  #pool: Pool;
  #released = false;

  /** @internal Use makeTransferable, empty, zeros or revive. */
  constructor(pool: Pool, buffer: ArrayBuffer, handle: Omit<TransferableHandle, '__arraypool__'>) {
    this.segment = handle.segment;
    this.offset = handle.offset;
    this.generation = handle.generation;
    this.byteOffset = handle.byteOffset;
    this.byteLength = handle.byteLength;
    this.dtype = handle.dtype;
    this.shape = Object.freeze([...handle.shape]);
    this.#pool = pool;
    this.#buffer = buffer;
    this.#viewId = out[0] as number;
    const info = DTYPES[handle.dtype];
    this.#array = info.view(buffer, 0, handle.byteLength / info.bytesPerElement) as T;
    adoptIntoScope(this);
  }

  /** The typed array: a view of shared memory (no copy). Empty once released. */
  get array(): T {
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
   * Drops this view's reference now and detaches it: `array` (and every
   * typed array made from it) becomes length 0, never a dangling view of
   * memory that may be reused. Idempotent. Without it, GC does the same.
   */
  release(): void {
    if (this.#released) return;
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
   * the first axis (negative indices count from the end, as in
   * `TypedArray.prototype.subarray`). Writes through either are seen by both.
   */
  subarray(begin = 0, end?: number): TransferableArray<T> {
    this.#live();
    const rows = this.shape[0] ?? 0;
    const clamp = (i: number): number => Math.min(Math.max(i < 0 ? rows + i : i, 0), rows);
    const from = clamp(Math.trunc(begin));
    const to = Math.max(from, clamp(end === undefined ? rows : Math.trunc(end)));
    const rowBytes = rows === 0 ? 0 : this.byteLength / rows;
    const shape = [to - from, ...this.shape.slice(1)];
    const byteOffset = this.byteOffset + from * rowBytes;
    const byteLength = (to - from) * rowBytes;
    const buffer = native(() =>
      binding.share(this.#pool.id, this.offset, this.generation, byteOffset, byteLength, out),
    );
    return new TransferableArray<T>(this.#pool, buffer, { ...this.#handleOf(), byteOffset, byteLength, shape });
  }

  /** A new block with a copy of the data. */
  copy(options: Pick<TransferOptions, 'transferRequired'> = {}): TransferableArray<T> {
    this.#live();
    return makeTransferable(this.#array, { ...options, shape: this.shape });
  }

  /** A private copy on the JS heap (not shared). */
  toArray(): T {
    this.#live();
    const info = DTYPES[this.dtype];
    const copy = info.view(new ArrayBuffer(this.byteLength), 0, this.byteLength / info.bytesPerElement);
    new Uint8Array(copy.buffer, copy.byteOffset, copy.byteLength).set(
      new Uint8Array(this.#buffer, 0, this.byteLength),
    );
    return copy as T;
  }

  /** The plain handle (what structured clone and JSON carry). */
  toHandle(): TransferableHandle {
    return { __arraypool__: HANDLE_FORMAT, ...this.#handleOf() };
  }

  #handleOf(): Omit<TransferableHandle, '__arraypool__'> {
    return {
      segment: this.segment,
      offset: this.offset,
      generation: this.generation,
      byteOffset: this.byteOffset,
      byteLength: this.byteLength,
      dtype: this.dtype,
      shape: this.shape,
    };
  }
}

function allocate(
  dtype: DType,
  shape: readonly number[],
  transferRequired: boolean,
): { pool: Pool; buffer: ArrayBuffer; handle: Omit<TransferableHandle, '__arraypool__'> } {
  const byteLength = shapeSize(shape) * DTYPES[dtype].bytesPerElement;
  const pool = getPool();
  const buffer = native(() => binding.allocate(pool.id, byteLength, transferRequired, out));
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
      shape,
    },
  };
}

/**
 * Copies a typed array (or Buffer) into the pool once and returns it as a
 * TransferableArray, whose `.array` is a zero-copy view of the block.
 */
export function makeTransferable<T extends PoolTypedArray>(
  array: T,
  options: TransferOptions = {},
): TransferableArray<T> {
  const dtype = dtypeOf(array);
  if (dtype === undefined) {
    const what = ArrayBuffer.isView(array) ? array.constructor.name : typeof array;
    throw new ArrayPoolError('ERR_UNSUPPORTED_DTYPE', `makeTransferable needs a typed array or Buffer, got ${what}`);
  }
  const shape = options.shape ?? [array.length];
  if (shapeSize(shape) !== array.length) {
    throw new ArrayPoolError(
      'ERR_INVALID_SHAPE',
      `shape [${shape.join(', ')}] has ${shapeSize(shape)} elements, the array ${array.length}`,
    );
  }
  const { pool, buffer, handle } = allocate(dtype, [...shape], options.transferRequired ?? true);
  const t = new TransferableArray<T>(pool, buffer, handle);
  new Uint8Array(buffer).set(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
  return t;
}

function allocateNew<D extends DType>(dtype: D, shape: number | readonly number[], options: TransferOptions): TransferableArray<DTypeArrays[D]> {
  if (!isDType(dtype)) {
    throw new ArrayPoolError('ERR_UNSUPPORTED_DTYPE', `unknown dtype ${JSON.stringify(dtype)}`);
  }
  const dims = typeof shape === 'number' ? [shape] : [...shape];
  const { pool, buffer, handle } = allocate(dtype, dims, options.transferRequired ?? true);
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
  if (!ArrayBuffer.isView(view) || view.byteLength === 0) return undefined;
  const dtype = dtypeOf(view);
  if (dtype === undefined || !native(() => binding.locateView(view, located))) return undefined;
  const pool = poolById(located[0] as number);
  if (pool === undefined) return undefined;
  const [, offset, generation, byteOffset] = located as unknown as [number, number, number, number];
  // A typed array made at an odd offset of the block (e.g. a Float32Array
  // over a Uint8Array slice) cannot be re-made from a handle: not a pool view
  // for our purposes, so callers copy it instead.
  if (byteOffset % DTYPES[dtype].bytesPerElement !== 0) return undefined;
  const buffer = native(() => binding.share(pool.id, offset, generation, byteOffset, view.byteLength, out));
  return new TransferableArray<T>(pool, buffer, {
    segment: pool.name,
    offset,
    generation,
    byteOffset,
    byteLength: view.byteLength,
    dtype,
    shape: [view.length],
  });
}

/** Turns one received handle into a live TransferableArray (marks the block transferred). */
export function attachHandle(value: Record<string, unknown>): TransferableArray {
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
  const buffer = native(() =>
    binding.attach(pool.id, h.offset, h.generation, h.byteOffset, h.byteLength, out),
  );
  return new TransferableArray(pool, buffer, h);
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
      if (!looksLikeHandle(node)) return NOT_A_LEAF;
      const live = attachHandle(node);
      attached.push(live);
      return live;
    }) as T;
  } catch (error) {
    // A bad handle midway: what was attached so far is nobody's.
    for (const t of attached) t.release();
    throw error;
  }
}

/** Returned by a `reviveMessage` leaf function for objects it does not replace. */
export const NOT_A_LEAF: unique symbol = Symbol('not a leaf');

/**
 * @internal The walk behind `revive` and the channels' decoder: visits plain
 * objects, arrays, Maps and Sets in place, asking `leaf` what each object
 * becomes (`NOT_A_LEAF`: descend into it). Every object is visited once:
 * cycles end, and a handle met twice yields one array (one reference).
 */
export function reviveMessage(value: unknown, leaf: (node: object) => unknown): unknown {
  const seen = new Map<object, unknown>();
  const visit = (node: unknown): unknown => {
    if (typeof node !== 'object' || node === null) return node;
    if (node instanceof TransferableArray || ArrayBuffer.isView(node)) return node;
    if (seen.has(node)) return seen.get(node);
    const replaced = leaf(node);
    if (replaced !== NOT_A_LEAF) {
      seen.set(node, replaced);
      return replaced;
    }
    seen.set(node, node);
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++) node[i] = visit(node[i]);
    } else if (node instanceof Map) {
      const entries = [...node.entries()];
      node.clear();
      for (const [k, v] of entries) node.set(visit(k), visit(v));
    } else if (node instanceof Set) {
      const items = [...node];
      node.clear();
      for (const v of items) node.add(visit(v));
    } else if (Object.getPrototypeOf(node) === Object.prototype || Object.getPrototypeOf(node) === null) {
      const record = node as Record<string, unknown>;
      for (const key of Object.keys(record)) record[key] = visit(record[key]);
    }
    return node;
  };
  return visit(value);
}
