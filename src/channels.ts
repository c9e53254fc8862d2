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
import type { EventEmitter } from 'node:events';
import type { MessagePort, Worker } from 'node:worker_threads';

import { ArrayPoolError } from './errors.js';
import { dtypeOf, type PoolTypedArray } from './dtypes.js';
import { looksLikeHandle, type TransferableHandle } from './handle.js';
import {
  NOT_A_LEAF,
  TransferableArray,
  attachHandle,
  makeTransferable,
  reviveMessage,
  toTransferable,
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

/** How a child-process IPC channel serializes; threads always use structured clone. */
export type Serialization = 'advanced' | 'json';

/**
 * Marks a plain typed array sent through the pool, so the receiver hands
 * back a plain typed array (`.array`) rather than a TransferableArray.
 */
const ARRAY_MARK = '__arraypool_array__';

interface ArrayMark {
  [ARRAY_MARK]: TransferableHandle;
}

export interface EncodeOptions {
  inlineBelowBytes: number;
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
  readonly #options: EncodeOptions;
  readonly #memo = new Map<object, unknown>();

  constructor(options: EncodeOptions) {
    this.#options = options;
  }

  encode(value: unknown): unknown {
    if (typeof value !== 'object' || value === null) return value;
    if (this.#memo.has(value)) return this.#memo.get(value);
    if (value instanceof TransferableArray) return this.#remember(value, this.#encodeTransferable(value));
    if (ArrayBuffer.isView(value)) return this.#remember(value, this.#encodeView(value));
    if (Array.isArray(value)) {
      const out = this.#remember(value, new Array<unknown>(value.length));
      value.forEach((item, i) => (out[i] = this.encode(item)));
      return out;
    }
    if (value instanceof Map) {
      const out = this.#remember(value, new Map<unknown, unknown>());
      for (const [k, v] of value) out.set(this.encode(k), this.encode(v));
      return out;
    }
    if (value instanceof Set) {
      const out = this.#remember(value, new Set<unknown>());
      for (const item of value) out.add(this.encode(item));
      return out;
    }
    if (isPlainObject(value)) {
      const out = this.#remember(value, {} as Record<string, unknown>);
      for (const key of Object.keys(value)) out[key] = this.encode(value[key]);
      return out;
    }
    return value;
  }

  #remember<T>(original: object, encoded: T): T {
    this.#memo.set(original, encoded);
    return encoded;
  }

  #encodeTransferable(t: TransferableArray): TransferableHandle {
    // A released array's block may already hold someone else's data.
    if (t.released) throw new ArrayPoolError('ERR_NOT_HELD', 'cannot send a released TransferableArray');
    if (this.#options.adopt) this.references.push(t);
    return t.toHandle();
  }

  #encodeView(view: ArrayBufferView): unknown {
    if (dtypeOf(view) === undefined) return view; // a DataView: cloned as it is
    const array = view as PoolTypedArray;
    const shared = toTransferable(array);
    if (shared !== undefined) {
      this.references.push(shared);
      return mark(shared);
    }
    // A SharedArrayBuffer cannot cross a process inline.
    if (array.byteLength < this.#options.inlineBelowBytes && !(array.buffer instanceof SharedArrayBuffer)) {
      return array;
    }
    const copy = makeTransferable(array, { transferRequired: this.#options.transferRequired });
    this.references.push(copy);
    this.copies.push(copy);
    return mark(copy);
  }
}

const mark = (t: TransferableArray): ArrayMark => ({ [ARRAY_MARK]: t.toHandle() });

const isArrayMark = (value: object): value is ArrayMark =>
  Object.hasOwn(value, ARRAY_MARK) && looksLikeHandle((value as Record<string, unknown>)[ARRAY_MARK]);

/** @internal Replaces the typed arrays of a message by what crosses the channel. */
export function encodeMessage(message: unknown, options: EncodeOptions): Encoded {
  const encoder = new Encoder(options);
  try {
    return { message: encoder.encode(message), references: encoder.references, copies: encoder.copies };
  } catch (error) {
    // Half-encoded: nothing will be sent, so nothing of it may stay.
    releaseAll(encoder.copies);
    throw error;
  }
}

/**
 * @internal Revives a received message in place. On failure (e.g. a stale
 * handle) releases what it had attached and throws.
 */
export function decodeMessage(message: unknown, { plainArrays }: { plainArrays: boolean }): Decoded {
  const references: TransferableArray[] = [];
  const attach = (handle: object): TransferableArray => {
    const t = attachHandle(handle as Record<string, unknown>);
    references.push(t);
    return t;
  };
  try {
    const decoded = reviveMessage(message, (node) => {
      // Handles become TransferableArrays (or, with `plainArrays`, their
      // `.array`); marked arrays become plain typed arrays.
      if (isArrayMark(node)) return attach(node[ARRAY_MARK]).array;
      if (!looksLikeHandle(node)) return NOT_A_LEAF;
      const t = attach(node);
      return plainArrays ? t.array : t;
    });
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
 * @internal The inline threshold for a channel: JSON cannot carry a typed
 * array, so with it every array goes through the pool.
 */
export function inlineThreshold(serialization: Serialization, inlineBelowBytes: number | undefined): number {
  if (inlineBelowBytes !== undefined && !(inlineBelowBytes >= 0)) {
    throw new ArrayPoolError('ERR_INVALID_ARG', `inlineBelowBytes must be a number >= 0, got ${String(inlineBelowBytes)}`);
  }
  if (serialization === 'json') {
    if (inlineBelowBytes !== undefined && inlineBelowBytes > 0) {
      throw new ArrayPoolError(
        'ERR_INVALID_ARG',
        "serialization 'json' cannot carry typed arrays inline: leave inlineBelowBytes unset (every array then goes through the pool) or use 'advanced'",
      );
    }
    return 0;
  }
  if (serialization !== 'advanced') {
    throw new ArrayPoolError('ERR_INVALID_ARG', `serialization must be 'advanced' or 'json', got ${String(serialization)}`);
  }
  return inlineBelowBytes ?? DEFAULT_INLINE_BELOW_BYTES;
}

/** Where `send` can post: a forked child, this process's parent, a thread, a port. */
export type MessageTarget = ChildProcess | NodeJS.Process | Worker | MessagePort;

export interface SendOptions {
  /**
   * How the child-process channel serializes (ignored for threads and
   * ports). Node does not expose it, so a JSON channel must say so here;
   * then every typed array goes through the pool. Default 'advanced'.
   */
  serialization?: Serialization;
  /** Arrays smaller than this are cloned inline (default DEFAULT_INLINE_BELOW_BYTES). */
  inlineBelowBytes?: number;
}

/**
 * Sends `message` with its typed arrays converted to handles: arrays that
 * view the pool go without a copy, small ones inline, others are copied
 * into the pool once. The copies are made transferRequired and this side's
 * reference is dropped as soon as the message is handed to the channel, so
 * the receiver owns them. TransferableArrays in the message stay the
 * caller's (keep them until the receiver has revived them).
 *
 * Resolves once the message is on its way (child processes: the send
 * callback; threads and ports: right away).
 */
export async function send(target: MessageTarget, message: unknown, options: SendOptions = {}): Promise<void> {
  const viaProcess = !('postMessage' in target);
  const serialization = viaProcess ? (options.serialization ?? 'advanced') : 'advanced';
  const encoded = encodeMessage(message, {
    inlineBelowBytes: inlineThreshold(serialization, options.inlineBelowBytes),
    transferRequired: true,
    adopt: false,
  });
  try {
    await deliver(target, encoded.message);
  } catch (error) {
    reclaim(encoded.copies);
    throw error;
  } finally {
    releaseAll(encoded.references);
  }
}

function deliver(target: MessageTarget, message: unknown): Promise<void> {
  if ('postMessage' in target) {
    target.postMessage(message);
    return Promise.resolve();
  }
  const channel = target as { connected?: boolean; send?: (message: unknown, done: (error: Error | null) => void) => boolean };
  return new Promise((resolve, reject) => {
    if (typeof channel.send !== 'function' || channel.connected !== true) {
      throw new ArrayPoolError('ERR_INVALID_ARG', 'send: the process has no connected IPC channel');
    }
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
export type MessageSource = ChildProcess | NodeJS.Process | Worker | MessagePort;

export interface OnMessageOptions {
  /**
   * Called instead of throwing when a message cannot be revived (e.g. a
   * stale handle: the sender's block was freed before it arrived). Without
   * it the error is thrown from the listener, as an uncaught exception.
   */
  onError?: (error: unknown) => void;
}

/**
 * Calls `handler` with each message from `source`, revived: handles become
 * TransferableArrays (release them when done), arrays that were sent plain
 * arrive as plain typed arrays viewing the pool (garbage-collected). Returns
 * the function that unsubscribes.
 */
export function onMessage<T = unknown>(
  source: MessageSource,
  handler: (message: T) => void,
  options: OnMessageOptions = {},
): () => void {
  const emitter = source as EventEmitter;
  const listener = (raw: unknown): void => {
    let decoded: Decoded;
    try {
      decoded = decodeMessage(raw, { plainArrays: false });
    } catch (error) {
      if (options.onError === undefined) throw error;
      options.onError(error);
      return;
    }
    handler(decoded.message as T);
  };
  emitter.on('message', listener);
  return () => {
    emitter.off('message', listener);
  };
}
