/**
 * The handle: the plain, JSON-safe data that crosses process boundaries in
 * place of an array. It mirrors `arraypool_core::Handle` (segment, offset,
 * generation, byteOffset, byteLength) plus the element type and shape.
 * A TransferableArray's own enumerable properties are exactly these fields,
 * so structured clone, fork IPC (json and advanced) and JSON.stringify all
 * carry the handle and never the bytes.
 */
import { ArrayPoolError } from './errors.js';
import { DTYPES, isDType, type DType } from './dtypes.js';

/** Format version; the marker by which `revive` recognises handles. */
export const HANDLE_FORMAT = 1;

export interface TransferableHandle {
  readonly __arraypool__: typeof HANDLE_FORMAT;
  readonly segment: string;
  readonly offset: number;
  readonly generation: number;
  readonly byteOffset: number;
  readonly byteLength: number;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

/** The handle's field names, in order (kept in one place; tests compare). */
export const HANDLE_FIELDS = [
  '__arraypool__',
  'segment',
  'offset',
  'generation',
  'byteOffset',
  'byteLength',
  'dtype',
  'shape',
] as const;

/**
 * An own data property's value, else undefined. A received handle is data:
 * its fields are never looked up on the prototype chain (where a polluted
 * `Object.prototype` or a crafted prototype could supply them) and no getter
 * is ever run (a getter could answer differently each time it is read).
 */
export function ownData(value: object, key: PropertyKey): unknown {
  const desc = Object.getOwnPropertyDescriptor(value, key);
  return desc !== undefined && 'value' in desc ? desc.value : undefined;
}

/** Whether a value claims to be a handle (it may still be malformed). */
export function looksLikeHandle(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && ownData(value, '__arraypool__') !== undefined;
}

/** A short description of a received value for an error message (never runs its code: no toString). */
export function show(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v.slice(0, 40));
    case 'bigint':
      return `${v}n`;
    case 'symbol':
      return 'a symbol';
    case 'function':
      return 'a function';
    case 'object':
      return v === null ? 'null' : Array.isArray(v) ? 'an array' : 'an object';
    default:
      return String(v);
  }
}

const isIndex = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Most dimensions a shape may have. */
const MAX_DIMS = 32;

/**
 * Validates a shape and returns a private copy of it with its element
 * count; throws ERR_INVALID_SHAPE. The caller's array is read once, by
 * index (not through its iterator, which could yield other values the
 * second time), and only the copy is used afterwards.
 *
 * The count is exact: the product of the non-zero dimensions must not pass
 * Number.MAX_SAFE_INTEGER, checked after every step, so no rounding can
 * hide an overflow; a zero dimension makes the count 0 but does not excuse
 * the others (`[2 ** 53 - 1, 2 ** 53 - 1, 0]` is refused, as NumPy does).
 */
export function checkShape(shape: unknown): { dims: number[]; size: number } {
  if (!Array.isArray(shape)) {
    throw new ArrayPoolError('ERR_INVALID_SHAPE', `shape must be an array of 1 to ${MAX_DIMS} non-negative integers`);
  }
  const n: unknown = shape.length;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_DIMS) {
    throw new ArrayPoolError('ERR_INVALID_SHAPE', `shape must be an array of 1 to ${MAX_DIMS} non-negative integers, got ${show(n)} entries`);
  }
  const dims: number[] = [];
  let size = 1;
  let zero = false;
  for (let i = 0; i < n; i++) {
    const d: unknown = shape[i];
    if (!isIndex(d)) {
      throw new ArrayPoolError('ERR_INVALID_SHAPE', `shape entries must be non-negative safe integers, got ${show(d)}`);
    }
    dims.push(d === 0 ? 0 : d); // -0 is 0
    if (d === 0) {
      zero = true;
      continue;
    }
    size *= d;
    if (size > Number.MAX_SAFE_INTEGER) {
      throw new ArrayPoolError(
        'ERR_INVALID_SHAPE',
        `shape [${dims.join(', ')}${i + 1 < n ? ', ...' : ''}] has more than Number.MAX_SAFE_INTEGER elements`,
      );
    }
  }
  return { dims, size: zero ? 0 : size };
}

/** Element count of a shape, or throws ERR_INVALID_SHAPE (see checkShape). */
export function shapeSize(shape: unknown): number {
  return checkShape(shape).size;
}

/** Validates every field of a received handle; throws ERR_INVALID_HANDLE. */
export function parseHandle(value: Record<string, unknown>): TransferableHandle {
  const bad = (why: string, cause?: unknown): never => {
    throw new ArrayPoolError('ERR_INVALID_HANDLE', `invalid handle: ${why}`, cause === undefined ? undefined : { cause });
  };
  // Each field is read once, as own data (see ownData); only the values
  // read here are checked and used.
  const format = ownData(value, '__arraypool__');
  const segment = ownData(value, 'segment');
  const offset = ownData(value, 'offset');
  const generation = ownData(value, 'generation');
  const byteOffset = ownData(value, 'byteOffset');
  const byteLength = ownData(value, 'byteLength');
  const dtype = ownData(value, 'dtype');
  const shape = ownData(value, 'shape');
  if (format !== HANDLE_FORMAT) bad(`unknown format ${show(format)}`);
  if (typeof segment !== 'string' || segment.length > 200) bad('segment must be a string');
  if (!isIndex(offset)) bad('offset must be a non-negative safe integer');
  if (!isIndex(generation)) bad('generation must be a non-negative safe integer');
  if (!isIndex(byteOffset)) bad('byteOffset must be a non-negative safe integer');
  if (!isIndex(byteLength)) bad('byteLength must be a non-negative safe integer');
  if (!isDType(dtype)) bad(`unknown dtype ${show(dtype)}`);
  let checked = { dims: [] as number[], size: 0 };
  try {
    checked = checkShape(shape);
  } catch (error) {
    bad(`shape: ${(error as Error).message}`, error);
  }
  const info = DTYPES[dtype as DType];
  // Exact: size is a safe integer and bytesPerElement a power of two.
  if (checked.size * info.bytesPerElement !== byteLength) bad('shape does not match byteLength');
  if ((byteOffset as number) % info.bytesPerElement !== 0) bad('byteOffset is not aligned to the dtype');
  return {
    __arraypool__: HANDLE_FORMAT,
    segment: segment as string,
    offset: offset as number,
    generation: generation as number,
    byteOffset: byteOffset as number,
    byteLength: byteLength as number,
    dtype: dtype as DType,
    shape: checked.dims,
  };
}
