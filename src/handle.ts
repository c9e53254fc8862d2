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

/** Whether a value claims to be a handle (it may still be malformed). */
export function looksLikeHandle(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { __arraypool__?: unknown }).__arraypool__ !== undefined &&
    Object.hasOwn(value, '__arraypool__')
  );
}

const isIndex = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Element count of a shape, or throws ERR_INVALID_SHAPE. */
export function shapeSize(shape: unknown): number {
  if (!Array.isArray(shape) || shape.length === 0 || shape.length > 32) {
    throw new ArrayPoolError('ERR_INVALID_SHAPE', 'shape must be an array of 1 to 32 non-negative integers');
  }
  let size = 1;
  for (const d of shape) {
    if (!isIndex(d)) {
      throw new ArrayPoolError('ERR_INVALID_SHAPE', `shape entries must be non-negative integers, got ${String(d)}`);
    }
    size *= d;
  }
  if (!Number.isSafeInteger(size)) throw new ArrayPoolError('ERR_INVALID_SHAPE', 'shape is too large');
  return size;
}

/** Validates every field of a received handle; throws ERR_INVALID_HANDLE. */
export function parseHandle(value: Record<string, unknown>): TransferableHandle {
  const bad = (why: string): never => {
    throw new ArrayPoolError('ERR_INVALID_HANDLE', `invalid handle: ${why}`);
  };
  const { __arraypool__: format, segment, offset, generation, byteOffset, byteLength, dtype, shape } = value;
  if (format !== HANDLE_FORMAT) bad(`unknown format ${String(format)}`);
  if (typeof segment !== 'string' || segment.length > 200) bad('segment must be a string');
  if (!isIndex(offset)) bad('offset must be a non-negative safe integer');
  if (!isIndex(generation)) bad('generation must be a non-negative safe integer');
  if (!isIndex(byteOffset)) bad('byteOffset must be a non-negative safe integer');
  if (!isIndex(byteLength)) bad('byteLength must be a non-negative safe integer');
  if (!isDType(dtype)) bad(`unknown dtype ${String(dtype).slice(0, 40)}`);
  let size = 0;
  try {
    size = shapeSize(shape);
  } catch {
    bad('shape must be an array of non-negative integers');
  }
  const info = DTYPES[dtype as DType];
  if (size * info.bytesPerElement !== byteLength) bad('shape does not match byteLength');
  if ((byteOffset as number) % info.bytesPerElement !== 0) bad('byteOffset is not aligned to the dtype');
  return {
    __arraypool__: HANDLE_FORMAT,
    segment: segment as string,
    offset: offset as number,
    generation: generation as number,
    byteOffset: byteOffset as number,
    byteLength: byteLength as number,
    dtype: dtype as DType,
    shape: [...(shape as number[])],
  };
}
