/** The element types a pool array can have, and their constructors. */
import { types } from 'node:util';

import { ArrayPoolError } from './errors.js';

export type DType =
  | 'int8'
  | 'uint8'
  | 'uint8clamped'
  | 'int16'
  | 'uint16'
  | 'int32'
  | 'uint32'
  | 'float32'
  | 'float64'
  | 'bigint64'
  | 'biguint64'
  | 'buffer';

export type PoolTypedArray =
  | Int8Array
  | Uint8Array
  | Uint8ClampedArray
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array
  | Buffer;

/** Maps a dtype name to the array type it produces. */
export interface DTypeArrays {
  int8: Int8Array;
  uint8: Uint8Array;
  uint8clamped: Uint8ClampedArray;
  int16: Int16Array;
  uint16: Uint16Array;
  int32: Int32Array;
  uint32: Uint32Array;
  float32: Float32Array;
  float64: Float64Array;
  bigint64: BigInt64Array;
  biguint64: BigUint64Array;
  buffer: Buffer;
}

interface DTypeInfo {
  bytesPerElement: number;
  view(buffer: ArrayBuffer, byteOffset: number, length: number): PoolTypedArray;
}

const typed = <T extends PoolTypedArray>(
  ctor: new (buffer: ArrayBuffer, byteOffset: number, length: number) => T,
  bytesPerElement: number,
): DTypeInfo => ({ bytesPerElement, view: (b, o, n) => new ctor(b, o, n) });

export const DTYPES: Readonly<Record<DType, DTypeInfo>> = Object.freeze({
  int8: typed(Int8Array, 1),
  uint8: typed(Uint8Array, 1),
  uint8clamped: typed(Uint8ClampedArray, 1),
  int16: typed(Int16Array, 2),
  uint16: typed(Uint16Array, 2),
  int32: typed(Int32Array, 4),
  uint32: typed(Uint32Array, 4),
  float32: typed(Float32Array, 4),
  float64: typed(Float64Array, 8),
  bigint64: typed(BigInt64Array, 8),
  biguint64: typed(BigUint64Array, 8),
  buffer: { bytesPerElement: 1, view: (b, o, n) => Buffer.from(b, o, n) },
});

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.hasOwn(DTYPES, value);
}

/*
 * The array's own getters could be shadowed (an own `length` or `buffer`
 * property on the instance, or a prototype swapped with setPrototypeOf), so
 * what reaches a native call or a copy is read through the intrinsic
 * %TypedArray%.prototype getters, which check the internal slots: they see
 * the real memory or throw.
 */
const TypedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as object;
const intrinsic = (proto: object, key: PropertyKey): ((this: unknown) => unknown) => {
  const get = Object.getOwnPropertyDescriptor(proto, key)?.get;
  if (get === undefined) throw new Error(`this runtime has no ${String(key)} getter`);
  return get as (this: unknown) => unknown;
};
/** The constructor's name for a real typed array; undefined (never a throw) for anything else. */
const typedArrayTag = intrinsic(TypedArrayPrototype, Symbol.toStringTag);
const typedArrayBuffer = intrinsic(TypedArrayPrototype, 'buffer');
const typedArrayByteOffset = intrinsic(TypedArrayPrototype, 'byteOffset');
const typedArrayByteLength = intrinsic(TypedArrayPrototype, 'byteLength');
const typedArrayLength = intrinsic(TypedArrayPrototype, 'length');
// `detached` is ES2024: Node 22 has it, Node 20 does not (see isDetached).
const arrayBufferDetached = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, 'detached')?.get;
const arrayBufferResizable = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, 'resizable')?.get;
const sharedArrayBufferGrowable = Object.getOwnPropertyDescriptor(SharedArrayBuffer.prototype, 'growable')?.get;

const TAGS: ReadonlyMap<string, DType> = new Map<string, DType>([
  ['Int8Array', 'int8'],
  ['Uint8Array', 'uint8'],
  ['Uint8ClampedArray', 'uint8clamped'],
  ['Int16Array', 'int16'],
  ['Uint16Array', 'uint16'],
  ['Int32Array', 'int32'],
  ['Uint32Array', 'uint32'],
  ['Float32Array', 'float32'],
  ['Float64Array', 'float64'],
  ['BigInt64Array', 'bigint64'],
  ['BigUint64Array', 'biguint64'],
]);

/**
 * The dtype of a typed array or Buffer, or undefined for anything else
 * (a DataView, a Float16Array, an object that only inherits from a typed
 * array's prototype). Decided by the internal slots, not by `instanceof`.
 */
export function dtypeOf(array: unknown): DType | undefined {
  const tag = typedArrayTag.call(array);
  if (typeof tag !== 'string') return undefined;
  const dtype = TAGS.get(tag);
  // A Buffer is a Uint8Array whose prototype is Buffer.prototype: only the
  // view it is re-made as differs, so the prototype may decide that.
  return dtype === 'uint8' && Buffer.isBuffer(array) ? 'buffer' : dtype;
}

/** A typed array's real byte length and length (intrinsic getters: own properties cannot lie). */
export function viewExtent(array: PoolTypedArray): { byteLength: number; length: number } {
  return { byteLength: typedArrayByteLength.call(array) as number, length: typedArrayLength.call(array) as number };
}

/** What a typed array really views, read through the intrinsic getters. */
export interface ViewFacts {
  dtype: DType;
  buffer: ArrayBuffer | SharedArrayBuffer;
  byteOffset: number;
  byteLength: number;
  length: number;
}

function isDetached(buffer: ArrayBuffer): boolean {
  if (arrayBufferDetached !== undefined) return arrayBufferDetached.call(buffer) === true;
  // Node 20: no `detached` getter. Only a detached buffer refuses a new view
  // (its byteLength reads 0, as a real empty buffer's does).
  try {
    new Uint8Array(buffer, 0, 0);
    return false;
  } catch {
    return true;
  }
}

/**
 * The facts of a typed array that is about to be copied into the pool, or
 * an ArrayPoolError: ERR_UNSUPPORTED_DTYPE for anything that is not a
 * typed array of a supported dtype; ERR_INVALID_ARG for a view whose
 * memory is gone (a detached buffer: its length reads 0, and copying from
 * it throws, which used to happen after the block was allocated) or whose
 * length is not fixed (a resizable ArrayBuffer, a growable
 * SharedArrayBuffer): a block has a fixed size, and a length-tracking view
 * can shrink, go out of bounds, or, over shared memory, grow from another
 * thread between the read that sizes the block and the copy. Called before
 * anything is allocated.
 */
export function viewFacts(array: unknown, what: string): ViewFacts {
  const dtype = dtypeOf(array);
  if (dtype === undefined) {
    const kind = ArrayBuffer.isView(array) ? (typedArrayTag.call(array) ?? 'DataView') : array === null ? 'null' : typeof array;
    throw new ArrayPoolError('ERR_UNSUPPORTED_DTYPE', `${what} needs a typed array or Buffer, got ${String(kind)}`);
  }
  const buffer = typedArrayBuffer.call(array) as ArrayBuffer | SharedArrayBuffer;
  if (types.isSharedArrayBuffer(buffer)) {
    if (sharedArrayBufferGrowable?.call(buffer) === true) {
      throw new ArrayPoolError(
        'ERR_INVALID_ARG',
        `${what}: the array views a growable SharedArrayBuffer, and a block has a fixed length; pass a fixed-length copy (array.slice())`,
      );
    }
  } else if (isDetached(buffer)) {
    throw new ArrayPoolError('ERR_INVALID_ARG', `${what}: the array's ArrayBuffer is detached (transferred or released): there is nothing to copy`);
  } else if (arrayBufferResizable?.call(buffer) === true) {
    throw new ArrayPoolError(
      'ERR_INVALID_ARG',
      `${what}: the array views a resizable ArrayBuffer, and a block has a fixed length; pass a fixed-length copy (array.slice())`,
    );
  }
  return {
    dtype,
    buffer,
    byteOffset: typedArrayByteOffset.call(array) as number,
    byteLength: typedArrayByteLength.call(array) as number,
    length: typedArrayLength.call(array) as number,
  };
}
