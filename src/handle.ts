/**
 * The handle: the plain, JSON-safe data that crosses process boundaries in
 * place of an array. It mirrors `arraypool_core::Handle` (segment, offset,
 * generation, byteOffset, byteLength) plus the element type and shape.
 *
 * Two spellings, both accepted wherever a handle is revived:
 * - the object form (format 1), `{ __arraypool__: 1, segment, offset,
 *   generation, byteOffset, byteLength, dtype, shape }`: what `toHandle()`
 *   returns and what Python's `handle()` gives, readable and easy to build;
 * - the compact form (format 2), `{ __arraypool__: '2:segment:offset:
 *   generation:byteOffset:byteLength:dtype:d0,d1,...' }`: what a
 *   TransferableArray is cloned to (its only own enumerable property), so
 *   that structured clone, fork IPC (json and advanced) and JSON.stringify
 *   carry one short string and never the bytes. One string instead of eight
 *   fields is what a message pays for carrying an array: serializing and
 *   parsing the object form cost ~15% of a fork round trip (issue 12).
 */
import { ArrayPoolError } from './errors.js';
import { DTYPES, isDType, type DType } from './dtypes.js';

/** The object form's version; the marker by which `revive` recognises handles. */
export const HANDLE_FORMAT = 1;

/** The compact form's version: the first field of its string. */
export const COMPACT_HANDLE_FORMAT = 2;

/** A handle in the object form (format 1). */
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

/** A handle in the compact form (format 2): what a TransferableArray clones to. */
export interface CompactHandle {
  readonly __arraypool__: string;
}

/** A handle's fields, without the marker. */
export type HandleFields = Omit<TransferableHandle, '__arraypool__'>;

/** The object form's field names, in order (kept in one place; tests compare). */
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

/** The compact form's string for a handle's fields (each already valid). */
export function compactHandle(h: HandleFields): string {
  // Safe integers print as plain decimals (no exponent below 1e21).
  return `${COMPACT_HANDLE_FORMAT}:${h.segment}:${h.offset}:${h.generation}:${h.byteOffset}:${h.byteLength}:${h.dtype}:${h.shape.join(',')}`;
}

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

/**
 * An object's own data property `__arraypool__` (undefined if it has none):
 * what makes it claim to be a handle, read once.
 */
export function handleFormat(value: object): unknown {
  // `hasOwn` first: it makes no descriptor object, and most objects a
  // message carries are not handles.
  return Object.hasOwn(value, '__arraypool__') ? ownData(value, '__arraypool__') : undefined;
}

/** Whether a value claims to be a handle (it may still be malformed). */
export function looksLikeHandle(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && handleFormat(value) !== undefined;
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

/** A received handle, checked: its fields, and the compact form's string if it came so. */
export interface ParsedHandle extends HandleFields {
  /**
   * The compact string as received (canonical: numbers in plain decimal
   * without leading zeros, so equal handles have equal strings), or
   * undefined for the object form.
   */
  readonly compact: string | undefined;
}

type Bad = (why: string, cause?: unknown) => never;

const invalidHandle: Bad = (why, cause) => {
  throw new ArrayPoolError('ERR_INVALID_HANDLE', `invalid handle: ${why}`, cause === undefined ? undefined : { cause });
};

/**
 * Validates every field of a received handle, in either form (see the
 * module doc); throws ERR_INVALID_HANDLE.
 */
export function parseHandle(value: Record<string, unknown>): ParsedHandle {
  // Each field is read once, as own data (see ownData); only the values
  // read here are checked and used.
  const format = ownData(value, '__arraypool__');
  if (typeof format === 'string') return parseCompact(format);
  if (format !== HANDLE_FORMAT) invalidHandle(`unknown format ${show(format)}`);
  return checkFields(
    ownData(value, 'segment'),
    ownData(value, 'offset'),
    ownData(value, 'generation'),
    ownData(value, 'byteOffset'),
    ownData(value, 'byteLength'),
    ownData(value, 'dtype'),
    ownData(value, 'shape'),
    undefined,
  );
}

/** The longest compact string read (a real one is under 150 characters). */
const MAX_COMPACT_LENGTH = 1024;

/**
 * The number spelled by `text[start, end)`, a field of the compact form:
 * plain decimal digits, no sign, no leading zero, at most 16 of them; NaN
 * for anything else (which the checks then refuse). Strict, so that one
 * handle has one spelling. Read in place (no substring per field: this runs
 * for every array a message carries).
 */
function decimalAt(text: string, start: number, end: number): number {
  const n = end - start;
  if (n <= 0 || n > 16 || (n > 1 && text.charCodeAt(start) === 48)) return NaN;
  let value = 0;
  for (let i = start; i < end; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return NaN;
    value = value * 10 + digit; // exact below 2^53; a value above stays above (and is refused)
  }
  return value;
}

/** The compact form's fields end at its first 7 `:`; the shape runs to the end. */
const COMPACT_SEPARATORS = 7;

/**
 * The segment and dtype of the last compact handle parsed, both checked.
 * A process mostly receives handles naming one pool and a few dtypes: when
 * the next one spells the same text, it is compared in place and the string
 * already checked is reused, so that no substring is made, the segment's
 * pattern is not run again, and the pool lookup and the dtype lookup hash a
 * string whose hash is known. Reviving runs cold (one handle per message,
 * between waits); this was ~1 µs of the ~5 µs a parse took there.
 */
let checkedSegment: string | undefined;
let checkedDType: DType | undefined;

/** Whether `text[start, end)` is exactly `known`. */
function spells(text: string, start: number, end: number, known: string | undefined): known is string {
  return known !== undefined && end - start === known.length && text.startsWith(known, start);
}

function parseCompact(text: string): ParsedHandle {
  if (text.length > MAX_COMPACT_LENGTH) invalidHandle(`the compact form is longer than ${MAX_COMPACT_LENGTH} characters`);
  const ends: number[] = [];
  for (let at = text.indexOf(':'); at !== -1 && ends.length <= COMPACT_SEPARATORS; at = text.indexOf(':', at + 1)) ends.push(at);
  const formatEnd = ends[0] ?? text.length;
  if (formatEnd !== 1 || text.charCodeAt(0) !== 48 + COMPACT_HANDLE_FORMAT) {
    invalidHandle(`unknown format ${show(text.slice(0, Math.min(formatEnd, 20)))}`);
  }
  if (ends.length !== COMPACT_SEPARATORS) {
    invalidHandle(`the compact form has ${COMPACT_SEPARATORS + 1} fields separated by ':', got ${text.split(':').length}`);
  }
  const [, segmentEnd, offsetEnd, generationEnd, byteOffsetEnd, byteLengthEnd, dtypeEnd] = ends as [
    number, number, number, number, number, number, number,
  ];
  const dims: number[] = [];
  // At most ~512 entries (the length is bounded): checkShape refuses more than MAX_DIMS, with their count.
  for (let start = dtypeEnd + 1; ; ) {
    const comma = text.indexOf(',', start);
    const end = comma === -1 ? text.length : comma;
    dims.push(decimalAt(text, start, end));
    if (comma === -1) break;
    start = comma + 1;
  }
  const knownSegment = spells(text, formatEnd + 1, segmentEnd, checkedSegment);
  const parsed = checkFields(
    knownSegment ? checkedSegment : text.slice(formatEnd + 1, segmentEnd),
    decimalAt(text, segmentEnd + 1, offsetEnd),
    decimalAt(text, offsetEnd + 1, generationEnd),
    decimalAt(text, generationEnd + 1, byteOffsetEnd),
    decimalAt(text, byteOffsetEnd + 1, byteLengthEnd),
    spells(text, byteLengthEnd + 1, dtypeEnd, checkedDType) ? checkedDType : text.slice(byteLengthEnd + 1, dtypeEnd),
    dims,
    text,
    knownSegment,
  );
  checkedSegment = parsed.segment;
  checkedDType = parsed.dtype;
  return parsed;
}

/** A segment as a handle may spell it (a pool's name is stricter: the core checks it). */
const PRINTABLE_ASCII = /^[\x20-\x7e]{0,200}$/;

/**
 * The checks both forms share, on the values read from the handle
 * (`segmentChecked`: the segment is one that passed them before).
 */
function checkFields(
  segment: unknown,
  offset: unknown,
  generation: unknown,
  byteOffset: unknown,
  byteLength: unknown,
  dtype: unknown,
  shape: unknown,
  compact: string | undefined,
  segmentChecked = false,
): ParsedHandle {
  const bad = invalidHandle;
  if (!segmentChecked && (typeof segment !== 'string' || !PRINTABLE_ASCII.test(segment))) bad('segment must be a string of at most 200 printable ASCII characters');
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
    segment: segment as string,
    offset: offset as number,
    generation: generation as number,
    byteOffset: byteOffset as number,
    byteLength: byteLength as number,
    dtype: dtype as DType,
    shape: checked.dims,
    compact,
  };
}

