/**
 * Channels: typed arrays in ordinary messages travel through the pool.
 *
 * `send` walks a message and replaces every typed array with a handle
 * (copying it into the pool once, or naming the pool range it already views),
 * except small ones, which are cheaper to clone inline; `onMessage` turns the
 * handles back into arrays before the handler sees the message. ProcessPool
 * uses the same conversion (`encodeMessage` / `decodeMessage`) for task
 * arguments and results.
 */
import type { ChildProcess } from 'node:child_process';
import type { Worker as ClusterWorker } from 'node:cluster';
import type { EventEmitter } from 'node:events';
import type { MessagePort, Worker } from 'node:worker_threads';

import { channelBudget, maxBytesInFlight, type ChannelEnd } from './backpressure.js';
import { ArrayPoolError } from './errors.js';
import { joinDelivery, keepReceived, runHandler, type Delivery } from './received.js';
import { NOT_A_LEAF } from './walk.js';
import { dtypeOf, type PoolTypedArray } from './dtypes.js';
import { handleFormat, looksLikeHandle, type CompactHandle } from './handle.js';
import {
  TransferableArray,
  attachHandle,
  makeTransferable,
  reviveMessage,
  markSent,
  toTransferable,
  unmarkedHandle,
} from './transferable.js';

/**
 * Arrays smaller than this are cloned into the message instead of going
 * through the pool. Chosen by measurement (`node --expose-gc
 * benches/process-pool.mjs --threshold`: a ProcessPool round trip per array
 * size, on 2 cores): below ~8 KiB an inline clone is 10-30% cheaper than a
 * pool block (allocate, copy, attach, release, one more message); 64 KiB is
 * the smallest size at which the pool was never slower, one way or both,
 * and from there its lead grows (one way: 0.6x at 256 KiB, 0.2x at 1 MiB).
 */
export const DEFAULT_INLINE_BELOW_BYTES = 64 * 1024;

/**
 * On a JSON channel, arrays smaller than this travel inline, as base64 in a
 * tagged object, instead of through the pool. Chosen by measurement
 * (benches/json-inline.mjs: a send/onMessage round trip over a JSON fork,
 * 2 cores, noisy): inline took 0.5-0.8x the pool's time from 256 B to 2 KiB,
 * 1.05-1.2x at 4 KiB, 1.4x at 8 KiB, 2.1x at 16 KiB. A pool block costs a
 * fixed ~allocate+attach+release; base64 costs per byte (4/3 of the bytes
 * through JSON.stringify and JSON.parse on both sides).
 */
export const DEFAULT_JSON_INLINE_BELOW_BYTES = 4 * 1024;

/** How a child-process IPC channel serializes; threads always use structured clone. */
export type Serialization = 'advanced' | 'json';

/**
 * The key of the tagged objects a JSON channel uses for what JSON would
 * change: typed arrays, DataViews and ArrayBuffers sent inline (base64), and
 * the numbers JSON cannot write (NaN, ±Infinity, -0). Reserved: a message
 * object of one's own with this key is refused on a JSON channel.
 */
const JSON_TAG = '__arraypool_json__';

type JsonTag =
  | { [JSON_TAG]: 'number'; value: 'NaN' | 'Infinity' | '-Infinity' | '-0' }
  | { [JSON_TAG]: 'bytes'; kind: string; base64: string };

/** The views a JSON channel can carry inline, by constructor name (a fixed list: the name comes from the wire). */
const INLINE_KINDS: ReadonlyMap<string, (buffer: ArrayBuffer, byteLength: number) => unknown> = new Map<
  string,
  (buffer: ArrayBuffer, byteLength: number) => unknown
>([
  ['ArrayBuffer', (b) => b],
  ['DataView', (b) => new DataView(b)],
  ['Buffer', (b) => Buffer.from(b)],
  ...(
    [
      Int8Array,
      Uint8Array,
      Uint8ClampedArray,
      Int16Array,
      Uint16Array,
      Int32Array,
      Uint32Array,
      Float32Array,
      Float64Array,
      BigInt64Array,
      BigUint64Array,
      // Float16Array from Node 24 on (a sender on 24 and a receiver on 20 is ERR_UNSUPPORTED_DTYPE).
      ...('Float16Array' in globalThis
        ? [(globalThis as unknown as { Float16Array: Float64ArrayConstructor }).Float16Array]
        : []),
    ] as const
  ).map((C): [string, (buffer: ArrayBuffer, byteLength: number) => unknown] => [
    C.name,
    (b, n) => {
      if (n % C.BYTES_PER_ELEMENT !== 0) {
        throw new ArrayPoolError('ERR_INVALID_ARG', `an inline ${C.name} of ${n} bytes is not whole elements`);
      }
      return new C(b);
    },
  ]),
]);

const objectTag = (value: object): string => Object.prototype.toString.call(value);

/**
 * Marks a plain typed array sent through the pool, so the receiver hands
 * back a plain typed array (`.array`) rather than a TransferableArray.
 */
const ARRAY_MARK = '__arraypool_array__';

interface ArrayMark {
  [ARRAY_MARK]: CompactHandle;
}

export interface EncodeOptions {
  inlineBelowBytes: number;
  /**
   * The channel is JSON: what JSON would change (typed arrays, NaN, -0…)
   * is encoded, what it cannot carry (Maps, BigInts, undefined…) is
   * ERR_NOT_SERIALIZABLE before anything is sent. Default false.
   */
  json?: boolean;
  /** Whether copies made here wait in flight for a receiver (see TransferOptions). */
  transferRequired: boolean;
  /**
   * Whether TransferableArrays found in the message are handed over: they
   * join `references`, to be released once the receiver holds them. False
   * leaves them to the caller.
   */
  adopt: boolean;
}

export interface Encoded {
  message: unknown;
  /** References this conversion holds for the receiver; release them once it has attached. */
  references: TransferableArray[];
  /** The subset of `references` that are fresh copies (nobody else knows their blocks). */
  copies: TransferableArray[];
  /** Arrays whose handles the message carries: `markAllSent` just before it leaves. */
  toMark: TransferableArray[];
}

export interface Decoded {
  message: unknown;
  /** The references attached while decoding; the receiver owns them. */
  references: TransferableArray[];
}

const isPlainObject = (value: object): value is Record<string, unknown> => {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
};

/**
 * Copies a message's containers (plain objects, arrays, Maps, Sets; any
 * depth; shared and cyclic references kept) with every typed array replaced
 * by what should cross the channel. The caller's message is not touched.
 * Other objects (class instances, Dates…) go as they are.
 */
class Encoder {
  readonly references: TransferableArray[] = [];
  readonly copies: TransferableArray[] = [];
  /** The references made for pool views found in the message (ours: released if encoding fails). */
  readonly shared: TransferableArray[] = [];
  /** Arrays whose handles are in the message: marked as sent only when it is sent. */
  readonly toMark: TransferableArray[] = [];
  readonly #options: EncodeOptions;
  readonly #memo = new Map<object, unknown>();

  constructor(options: EncodeOptions) {
    this.#options = options;
  }

  encode(value: unknown): unknown {
    return this.#options.json === true ? this.#encodeJson(value, []) : this.#encodeAny(value);
  }

  #encodeAny(value: unknown): unknown {
    if (typeof value !== 'object' || value === null) return value;
    if (this.#memo.has(value)) return this.#memo.get(value);
    if (value instanceof TransferableArray) return this.#remember(value, this.#encodeTransferable(value));
    if (ArrayBuffer.isView(value)) return this.#remember(value, this.#encodeView(value));
    if (Array.isArray(value)) {
      const out = this.#remember(value, new Array<unknown>(value.length));
      value.forEach((item, i) => (out[i] = this.#encodeAny(item)));
      return out;
    }
    if (value instanceof Map) {
      const out = this.#remember(value, new Map<unknown, unknown>());
      for (const [k, v] of value) out.set(this.#encodeAny(k), this.#encodeAny(v));
      return out;
    }
    if (value instanceof Set) {
      const out = this.#remember(value, new Set<unknown>());
      for (const item of value) out.add(this.#encodeAny(item));
      return out;
    }
    if (isPlainObject(value)) {
      const out = this.#remember(value, {} as Record<string, unknown>);
      for (const key of Object.keys(value)) defineOwn(out, key, this.#encodeAny(value[key]));
      return out;
    }
    return value;
  }

  /**
   * The JSON channel's walk. Node writes the message with JSON.stringify,
   * which changes data silently (a typed array becomes `{ '0': … }`, NaN
   * null, a Map `{}`, a Date a string, undefined in an array null); every
   * value is therefore either one JSON writes back exactly, encoded (tags),
   * or refused here, before a block is allocated or anything is sent.
   * `path` names the value in the error.
   */
  #encodeJson(value: unknown, path: (string | number)[]): unknown {
    switch (typeof value) {
      case 'string':
      case 'boolean':
        return value;
      case 'number':
        if (Number.isFinite(value) && !Object.is(value, -0)) return value;
        return { [JSON_TAG]: 'number', value: Object.is(value, -0) ? '-0' : String(value) } as JsonTag;
      case 'object':
        break;
      case 'undefined':
        // The top of a ProcessPool result (a task that returns nothing) is not written by JSON at all.
        if (path.length === 0) return value;
        return unserializable(path, 'undefined (JSON drops it, or writes null in an array)');
      default:
        return unserializable(path, `a ${typeof value} (JSON cannot write it)`);
    }
    if (value === null) return value;
    if (this.#memo.has(value)) {
      const seen = this.#memo.get(value);
      if (seen === IN_PROGRESS) return unserializable(path, 'a cycle (JSON cannot write one)');
      return seen; // a shared object: JSON writes it twice, the receiver gets two equal copies
    }
    if (value instanceof TransferableArray) return this.#remember(value, this.#encodeTransferable(value));
    if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
      return this.#remember(value, this.#encodeJsonBytes(value, path));
    }
    this.#memo.set(value, IN_PROGRESS);
    let out: unknown;
    if (Array.isArray(value)) {
      const array = new Array<unknown>(value.length);
      for (let i = 0; i < value.length; i++) {
        path.push(i);
        // A hole reads as undefined: refused like one (JSON writes null).
        array[i] = this.#encodeJson(value[i], path);
        path.pop();
      }
      out = array;
    } else {
      const toJSON = (value as { toJSON?: unknown }).toJSON;
      const tag = objectTag(value);
      if (tag === '[object Date]') {
        return unserializable(path, 'a Date (JSON makes it a string): send date.getTime() or use serialization "advanced"');
      } else if (typeof toJSON === 'function') {
        // The object's own JSON form, which its author chose: JSON.stringify would use it too.
        out = this.#encodeJson(toJSON.call(value, String(path.at(-1) ?? '')), path);
      } else if (tag === '[object Object]') {
        // Plain objects, and class instances as both channels carry them: own enumerable properties.
        if (Object.hasOwn(value, JSON_TAG) || Object.hasOwn(value, ARRAY_MARK)) {
          return unserializable(path, `an object with the reserved key ${JSON_TAG} or ${ARRAY_MARK}`);
        }
        const object: Record<string, unknown> = {};
        for (const key of Object.keys(value)) {
          path.push(key);
          defineOwn(object, key, this.#encodeJson((value as Record<string, unknown>)[key], path));
          path.pop();
        }
        out = object;
      } else {
        // Map, Set, RegExp, Error, boxed primitives, SharedArrayBuffer…: JSON writes `{}` or a primitive.
        return unserializable(path, `a ${tag.slice(8, -1)} (JSON does not keep it): use serialization "advanced"`);
      }
    }
    this.#memo.set(value, out);
    return out;
  }

  /** A view or ArrayBuffer on a JSON channel: through the pool when large and a pool dtype, else inline base64. */
  #encodeJsonBytes(value: ArrayBufferView | ArrayBuffer, path: (string | number)[]): unknown {
    if (value instanceof ArrayBuffer) return inlineBytes('ArrayBuffer', new Uint8Array(value));
    const dtype = dtypeOf(value);
    if (dtype !== undefined) {
      const array = value as PoolTypedArray;
      const shared = this.#shared(array);
      if (shared !== undefined) return shared;
      if (array.byteLength >= this.#options.inlineBelowBytes) return this.#copy(array);
    }
    const kind = dtype === 'buffer' ? 'Buffer' : value instanceof DataView ? 'DataView' : value.constructor.name;
    if (!INLINE_KINDS.has(kind)) {
      return unserializable(path, `a ${kind} view (a JSON channel carries typed arrays, DataViews and ArrayBuffers)`);
    }
    return inlineBytes(kind, new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
  }

  #remember<T>(original: object, encoded: T): T {
    this.#memo.set(original, encoded);
    return encoded;
  }

  #encodeTransferable(t: TransferableArray): CompactHandle {
    // A released array's block may already hold someone else's data.
    if (t.released) throw new ArrayPoolError('ERR_NOT_HELD', 'cannot send a released TransferableArray');
    if (this.#options.adopt) this.references.push(t);
    this.toMark.push(t);
    return unmarkedHandle(t);
  }

  #encodeView(view: ArrayBufferView): unknown {
    if (dtypeOf(view) === undefined) return view; // a DataView, a Float16Array: cloned as they are
    const array = view as PoolTypedArray;
    const shared = this.#shared(array);
    if (shared !== undefined) return shared;
    // A SharedArrayBuffer cannot cross a process inline.
    if (array.byteLength < this.#options.inlineBelowBytes && !(array.buffer instanceof SharedArrayBuffer)) {
      return array;
    }
    return this.#copy(array);
  }

  /** A view of the pool goes as a handle of its range, without a copy. */
  #shared(array: PoolTypedArray): ArrayMark | undefined {
    const shared = toTransferable(array);
    if (shared === undefined) return undefined;
    this.references.push(shared);
    this.shared.push(shared);
    this.toMark.push(shared);
    return mark(shared);
  }

  #copy(array: PoolTypedArray): ArrayMark {
    const copy = makeTransferable(array, { transferRequired: this.#options.transferRequired });
    this.references.push(copy);
    this.copies.push(copy);
    this.toMark.push(copy);
    return mark(copy);
  }
}

/** `out[key] = value` that also makes an own `__proto__` key a property, not the prototype. */
function defineOwn(out: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
}

/** `#memo`'s value for an object whose encoding is under way (met again: a cycle). */
const IN_PROGRESS: unique symbol = Symbol('in progress');

function unserializable(path: readonly (string | number)[], what: string): never {
  const at = path.length === 0 ? 'the message' : `message${path.map((k) => (typeof k === 'number' ? `[${k}]` : `.${k}`)).join('')}`;
  throw new ArrayPoolError('ERR_NOT_SERIALIZABLE', `cannot send ${at} over a JSON channel: it is ${what}`);
}

const inlineBytes = (kind: string, bytes: Uint8Array): JsonTag => ({
  [JSON_TAG]: 'bytes',
  kind,
  base64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64'),
});

const isJsonTag = (value: object): value is JsonTag => Object.hasOwn(value, JSON_TAG);

/** Turns a JSON tag back into what was sent. */
function decodeJsonTag(tag: JsonTag): unknown {
  const body = tag as unknown as Record<string, unknown>;
  if (body[JSON_TAG] === 'number') {
    const v = body.value;
    if (v === 'NaN') return NaN;
    if (v === 'Infinity') return Infinity;
    if (v === '-Infinity') return -Infinity;
    if (v === '-0') return -0;
  } else if (body[JSON_TAG] === 'bytes' && typeof body.kind === 'string' && typeof body.base64 === 'string') {
    const make = INLINE_KINDS.get(body.kind);
    if (make === undefined) {
      throw new ArrayPoolError('ERR_UNSUPPORTED_DTYPE', `a ${body.kind} arrived, which this Node cannot make`);
    }
    const bytes = Buffer.from(body.base64, 'base64');
    // Its own ArrayBuffer (Buffer.from may give a slice of a shared pool), aligned for any element size.
    const buffer = new ArrayBuffer(bytes.byteLength);
    new Uint8Array(buffer).set(bytes);
    return make(buffer, bytes.byteLength);
  }
  throw new ArrayPoolError('ERR_INVALID_ARG', `a malformed ${JSON_TAG} tag arrived`);
}

const mark = (t: TransferableArray): ArrayMark => ({ [ARRAY_MARK]: unmarkedHandle(t) });

const isArrayMark = (value: object): value is ArrayMark =>
  Object.hasOwn(value, ARRAY_MARK) && looksLikeHandle((value as Record<string, unknown>)[ARRAY_MARK]);

/** @internal Marks the handles of an encoded message as sent: call just before it leaves. */
export function markAllSent(encoded: Pick<Encoded, 'toMark'>): void {
  for (const t of encoded.toMark) markSent(t);
}

/** @internal Replaces the typed arrays of a message by what crosses the channel. */
export function encodeMessage(message: unknown, options: EncodeOptions): Encoded {
  const encoder = new Encoder(options);
  try {
    const encoded = encoder.encode(message);
    return { message: encoded, references: encoder.references, copies: encoder.copies, toMark: encoder.toMark };
  } catch (error) {
    // Half-encoded (e.g. ERR_NOT_SERIALIZABLE after a large array was
    // copied): nothing will be sent, so nothing of it may stay. Nothing was
    // marked as sent yet, so releasing frees even a transferRequired copy.
    releaseAll(encoder.shared);
    releaseAll(encoder.copies);
    throw error;
  }
}

/**
 * @internal Revives a received message in place. On failure (e.g. a stale
 * handle) it still attaches every other handle of the message, releases
 * them all and throws the first error: a block in flight for this message
 * is taken over (and freed) either way, not left in flight forever.
 */
export function decodeMessage(message: unknown, { plainArrays, json }: { plainArrays: boolean; json: boolean }): Decoded {
  const references: TransferableArray[] = [];
  const failures: unknown[] = [];
  const attach = (handle: object, format?: unknown): TransferableArray => {
    const t = attachHandle(handle as Record<string, unknown>, format);
    references.push(t);
    return t;
  };
  const leaf = (node: Record<string, unknown>): unknown => {
    // Handles become TransferableArrays (or, with `plainArrays`, their
    // `.array`); marked arrays become plain typed arrays.
    if (isArrayMark(node)) return attach(node[ARRAY_MARK]).array;
    // Tags exist only on JSON channels: elsewhere such a key is the sender's data.
    if (json && isJsonTag(node)) return decodeJsonTag(node);
    const format = handleFormat(node);
    if (format === undefined) return NOT_A_LEAF;
    const t = attach(node, format);
    return plainArrays ? t.array : t;
  };
  try {
    const decoded = reviveMessage(message, (node) => {
      try {
        return leaf(node as Record<string, unknown>);
      } catch (error) {
        failures.push(error);
        return NOT_A_LEAF;
      }
    });
    if (failures.length > 0) throw failures[0];
    return { message: decoded, references };
  } catch (error) {
    releaseAll(references);
    throw error;
  }
}

/** @internal */
export function releaseAll(references: Iterable<TransferableArray>): void {
  for (const t of references) t.release();
}

/**
 * @internal The inline threshold for a channel. JSON cannot carry a typed
 * array: below the threshold it goes inline as tagged base64, above it
 * through the pool.
 */
export function inlineThreshold(serialization: Serialization, inlineBelowBytes: number | undefined): number {
  if (inlineBelowBytes !== undefined && !(inlineBelowBytes >= 0)) {
    throw new ArrayPoolError('ERR_INVALID_ARG', `inlineBelowBytes must be a number >= 0, got ${String(inlineBelowBytes)}`);
  }
  if (serialization !== 'advanced' && serialization !== 'json') {
    throw new ArrayPoolError('ERR_INVALID_ARG', `serialization must be 'advanced' or 'json', got ${String(serialization)}`);
  }
  return inlineBelowBytes ?? (serialization === 'json' ? DEFAULT_JSON_INLINE_BELOW_BYTES : DEFAULT_INLINE_BELOW_BYTES);
}

/**
 * @internal How a child-process channel serializes, read from Node's
 * channel handle: Node does not expose the mode, but its two message
 * readers keep different state on the handle (`kJSONBuffer` for JSON,
 * `kMessageBuffer` for advanced; Node 12.16 to 26). Undefined when it
 * cannot tell (no channel, or a future Node that keeps other state).
 */
export function channelSerialization(channelOwner: object): Serialization | undefined {
  const key = Object.getOwnPropertySymbols(channelOwner).find((k) => k.description === 'kChannelHandle');
  const handle: unknown = key === undefined ? undefined : (channelOwner as Record<symbol, unknown>)[key];
  if (typeof handle !== 'object' || handle === null) return undefined;
  const state = Object.getOwnPropertySymbols(handle).map((k) => k.description);
  if (state.includes('kJSONBuffer')) return 'json';
  if (state.includes('kMessageBuffer')) return 'advanced';
  return undefined;
}

/**
 * Where `send` can post: a forked child, this process's parent, a
 * node:cluster Worker (its process), a thread, a port.
 */
export type MessageTarget = ChildProcess | NodeJS.Process | ClusterWorker | Worker | MessagePort;

export interface SendOptions {
  /**
   * How the child-process channel serializes (ignored for threads and
   * ports). Read from the channel when Node lets us (Node 20 to 26 do);
   * saying it here then must agree (else ERR_INVALID_ARG). When it cannot
   * be read and is not given, 'json': its rules never change data, they
   * refuse what JSON cannot carry.
   */
  serialization?: Serialization;
  /**
   * Arrays smaller than this go inline (default DEFAULT_INLINE_BELOW_BYTES,
   * on a JSON channel DEFAULT_JSON_INLINE_BELOW_BYTES).
   */
  inlineBelowBytes?: number;
  /**
   * The channel's budget: `send` waits (before copying anything) while the
   * pool copies it sent to this target and that are not given back yet
   * reach this many bytes. Default DEFAULT_MAX_BYTES_IN_FLIGHT (64 MiB);
   * `Infinity` never waits for room (it still leaves after the sends to the
   * same target called before it). Per send: pass the same value on every
   * send to a target to give that channel its own budget.
   */
  maxBytesInFlight?: number;
  /** Aborting while the send waits for room rejects it with ERR_ABORTED (nothing was copied or sent). */
  signal?: AbortSignal;
}

/**
 * A node:cluster Worker sends through its ChildProcess (`worker.process`);
 * in the worker, `cluster.worker.process` is `process` itself.
 */
const isClusterWorker = (target: object): target is ClusterWorker =>
  'process' in target && typeof (target as { isConnected?: unknown }).isConnected === 'function';

/**
 * Sends `message` with its typed arrays converted to handles: arrays that
 * view the pool go without a copy, small ones inline, others are copied
 * into the pool once. The copies are made transferRequired and this side's
 * reference is dropped as soon as the message is handed to the channel, so
 * the receiver owns them. TransferableArrays in the message stay the
 * caller's (keep them until the receiver has revived them).
 *
 * On a JSON channel nothing changes on the way either: typed arrays,
 * DataViews, ArrayBuffers, NaN, ±Infinity and -0 are encoded; what JSON
 * cannot carry (Map, Set, Date, BigInt, undefined, cycles…) is
 * ERR_NOT_SERIALIZABLE before anything is allocated or sent.
 *
 * Backpressure: the copies count against the channel's budget
 * (`maxBytesInFlight`) until the receiver gives them back (`onMessage`
 * does when the handler is done). While the budget is used up, `send`
 * waits before copying: then the arrays are read when the send goes, so
 * do not change them before the promise resolves. Sends to one target
 * leave in call order.
 *
 * Resolves once the message is on its way (child processes: the send
 * callback; threads and ports: right away).
 */
export async function send(target: MessageTarget, message: unknown, options: SendOptions = {}): Promise<void> {
  const to = isClusterWorker(target) ? target.process : target;
  const viaProcess = !('postMessage' in to);
  const serialization = viaProcess ? processSerialization(to, options.serialization) : 'advanced';
  const inlineBelowBytes = inlineThreshold(serialization, options.inlineBelowBytes);
  const limit = maxBytesInFlight(options.maxBytesInFlight);
  // Arrays a running onMessage handler received and passes on here must
  // outlive the handler: the receiver of this message attaches them later.
  keepReceived(message);
  const budget = channelBudget(to, () => channelEnd(to));
  // A thread that exited takes a message silently: its copies would stay in
  // flight. (A process channel refuses it itself, with ERR_INVALID_ARG.)
  if (!viaProcess && !budget.open) throw new ArrayPoolError('ERR_CHANNEL_CLOSED', 'send: the channel is closed (the thread exited or the port closed)');
  const turn = budget.admit(limit, options.signal);
  // Without a wait, the message is copied now, within the call.
  if (turn !== undefined) await turn;
  let encoded: Encoded;
  try {
    encoded = encodeMessage(message, { inlineBelowBytes, json: serialization === 'json', transferRequired: true, adopt: false });
    budget.add(encoded.copies);
  } finally {
    // A send that waited was let go alone: the next may go once it has copied.
    if (turn !== undefined) budget.admitted();
  }
  try {
    await deliver(to, encoded.message, () => markAllSent(encoded));
  } catch (error) {
    reclaim(encoded.copies);
    throw error;
  } finally {
    releaseAll(encoded.references);
  }
}

/**
 * Whether the other end of a channel can still give blocks back: a process
 * channel while connected, a thread until it exits, a port until it closes.
 */
function channelEnd(to: Exclude<MessageTarget, ClusterWorker>): ChannelEnd {
  if (!('postMessage' in to)) return { isOpen: () => to.connected === true };
  let open = true;
  (to as EventEmitter).once(isThreadWorker(to) ? 'exit' : 'close', () => (open = false));
  // A Worker that exited before its first send has threadId -1. A port
  // closed before it has no such state: its sends wait (see README).
  return { isOpen: () => open && !(isThreadWorker(to) && to.threadId === -1) };
}

const isThreadWorker = (to: Worker | MessagePort): to is Worker => 'threadId' in to && 'terminate' in to;

function processSerialization(channelOwner: object, stated: Serialization | undefined): Serialization {
  const read = channelSerialization(channelOwner);
  if (read !== undefined && stated !== undefined && read !== stated) {
    throw new ArrayPoolError('ERR_INVALID_ARG', `send: serialization '${stated}' was given, but the channel uses '${read}'`);
  }
  return read ?? stated ?? 'json';
}

/** Sends `message`; `leaving()` runs once nothing can stop it any more but the send itself. */
function deliver(target: Exclude<MessageTarget, ClusterWorker>, message: unknown, leaving: () => void): Promise<void> {
  if ('postMessage' in target) {
    leaving();
    target.postMessage(message);
    return Promise.resolve();
  }
  const channel = target as { connected?: boolean; send?: (message: unknown, done: (error: Error | null) => void) => boolean };
  return new Promise((resolve, reject) => {
    if (typeof channel.send !== 'function' || channel.connected !== true) {
      throw new ArrayPoolError('ERR_INVALID_ARG', 'send: the process has no connected IPC channel');
    }
    leaving();
    channel.send(message, (error) => (error ? reject(error) : resolve()));
  });
}

/**
 * Copies that were never sent would wait in flight for a receiver forever
 * (transferRequired). Attaching one here counts as the hand-over, so
 * releasing it frees the block.
 */
function reclaim(copies: readonly TransferableArray[]): void {
  for (const copy of copies) attachHandle({ ...copy.toHandle() }).release();
}

/** What `onMessage` listens to: anything that emits 'message' with the value first. */
export type MessageSource = ChildProcess | NodeJS.Process | ClusterWorker | Worker | MessagePort;

export interface OnMessageOptions {
  /**
   * Default true: the message's arrays are released as soon as the handler
   * is done (it returned, or the promise it returned settled), so their
   * blocks are freed at once and the sender's budget refills; `keep(value)`
   * inside the handler exempts what it is given. False: nothing is released
   * here (plain arrays go with garbage collection, TransferableArrays with
   * their `release()`).
   */
  autoRelease?: boolean;
  /**
   * Called instead of throwing when a message cannot be revived (e.g. a
   * stale handle: the sender's block was freed before it arrived). Without
   * it the error is thrown from the listener, as an uncaught exception.
   */
  onError?: (error: unknown) => void;
}

/**
 * Calls `handler` with each message from `source`, revived: handles become
 * TransferableArrays, arrays that were sent plain arrive as plain typed
 * arrays viewing the pool. When the handler is done (it returned, or the
 * promise it returned settled), they are released — emptied, their blocks
 * freed — unless passed to `keep()` while it ran (or `autoRelease: false`).
 * Returns the function that unsubscribes.
 */
export function onMessage<T = unknown>(
  source: MessageSource,
  handler: (message: T) => unknown,
  options: OnMessageOptions = {},
): () => void {
  const autoRelease = options.autoRelease ?? true;
  // A cluster Worker re-emits its process's messages (the cluster's own
  // internal ones aside): listening to either is the same.
  const emitter = source as EventEmitter;
  const owner = isClusterWorker(source) ? source.process : source;
  let json: boolean | undefined;
  const listener = (raw: unknown): unknown => {
    let delivery: Delivery;
    try {
      // Several listeners of one source get the same raw message: the
      // first revives it (in place), the others join its delivery.
      delivery = joinDelivery(raw, () => {
        // JSON tags are decoded only on a JSON channel (a process channel
        // whose mode is not known to be 'advanced'); threads and ports clone.
        json ??= !('postMessage' in owner) && channelSerialization(owner) !== 'advanced';
        return decodeMessage(raw, { plainArrays: false, json });
      });
    } catch (error) {
      if (options.onError === undefined) throw error;
      options.onError(error);
      return undefined;
    }
    return runHandler(delivery, () => handler(delivery.message as T), autoRelease);
  };
  emitter.on('message', listener);
  return () => {
    emitter.off('message', listener);
  };
}
