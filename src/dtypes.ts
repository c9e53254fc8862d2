/** The element types a pool array can have, and their constructors. */

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

/** The dtype of a typed array or Buffer, or undefined for anything else. */
export function dtypeOf(array: unknown): DType | undefined {
  if (Buffer.isBuffer(array)) return 'buffer';
  if (array instanceof Int8Array) return 'int8';
  if (array instanceof Uint8Array) return 'uint8';
  if (array instanceof Uint8ClampedArray) return 'uint8clamped';
  if (array instanceof Int16Array) return 'int16';
  if (array instanceof Uint16Array) return 'uint16';
  if (array instanceof Int32Array) return 'int32';
  if (array instanceof Uint32Array) return 'uint32';
  if (array instanceof Float32Array) return 'float32';
  if (array instanceof Float64Array) return 'float64';
  if (array instanceof BigInt64Array) return 'bigint64';
  if (array instanceof BigUint64Array) return 'biguint64';
  return undefined;
}
