/**
 * What `onMessage` received, and when it is given back. The arrays of a
 * message (plain typed arrays viewing the pool, and TransferableArrays) are
 * released as soon as the handler is done with the message: right after it
 * returns (once every listener of the same source has had the message), or
 * when the promise it returns settles. That frees their blocks at once
 * instead of at the next garbage collection, and it is what lets a sender
 * waiting on its channel's budget go on (see backpressure.ts).
 *
 * A handler that needs an array longer calls `keep(value)` while it runs:
 * every received array reachable from `value` is left to the old rules (a
 * plain array is freed when garbage-collected, a TransferableArray by its
 * `release()`). Arrays a handler passes to `send` are kept the same way
 * (the next receiver attaches them later). Kept arrays still count against
 * the sender's budget until they are freed. `onMessage(…, { autoRelease:
 * false })` keeps everything.
 */
import type { Decoded } from './channels.js';
import { ArrayPoolError } from './errors.js';
import { TransferableArray, madeView } from './transferable.js';

/** One received message and the listeners that are handling it. */
export interface Delivery {
  readonly message: unknown;
  readonly references: readonly TransferableArray[];
  /** Listeners whose handler has not finished. */
  users: number;
}

/** The delivery of each raw message whose handlers run (listeners of one source share it). */
const deliveries = new WeakMap<object, Delivery>();
/**
 * The TransferableArray behind each array of a message whose handlers run:
 * itself, its view and its view's buffer (a subarray or DataView of a
 * received array keeps it too). Views are made lazily: the ones made after
 * `receive` are found through `handling`.
 */
const received = new WeakMap<object, TransferableArray>();
const handling = new Set<Delivery>();
const kept = new WeakSet<TransferableArray>();
/** Received arrays given back already: keeping one is an error, not a silent empty array. */
const givenBack = new WeakSet<object>();

/**
 * The delivery of `raw`: joined if another listener of the same emit is
 * handling it (it was revived in place already), else decoded now.
 */
export function joinDelivery(raw: unknown, decode: () => Decoded): Delivery {
  const joined = typeof raw === 'object' && raw !== null ? deliveries.get(raw) : undefined;
  if (joined !== undefined && joined.users > 0) {
    joined.users++;
    return joined;
  }
  const decoded = decode();
  const delivery: Delivery = { message: decoded.message, references: decoded.references, users: 1 };
  if (typeof raw === 'object' && raw !== null) deliveries.set(raw, delivery);
  for (const t of delivery.references) {
    received.set(t, t);
    const view = madeView(t);
    if (view !== undefined) {
      received.set(view, t);
      received.set(view.buffer, t);
    }
  }
  handling.add(delivery);
  return delivery;
}

/**
 * Runs a listener's handler; once it is done (returned: at the end of the
 * current emit, so that the other listeners get the message too; or its
 * promise settled), leaves the delivery. `autoRelease: false` keeps every
 * array of the message.
 */
export function runHandler(delivery: Delivery, handle: () => unknown, autoRelease: boolean): unknown {
  if (!autoRelease) {
    for (const t of delivery.references) kept.add(t);
  }
  const leave = (): void => {
    if (--delivery.users === 0) giveBack(delivery);
  };
  let result: unknown;
  try {
    result = handle();
  } catch (error) {
    queueMicrotask(leave);
    throw error;
  }
  if (isThenable(result)) {
    // A rejection still reaches the listener's caller (an unhandled
    // rejection, as without arraypool).
    return Promise.resolve(result).finally(leave);
  }
  queueMicrotask(leave);
  return result;
}

function giveBack(delivery: Delivery): void {
  handling.delete(delivery);
  for (const t of delivery.references) {
    const view = madeView(t);
    received.delete(t);
    if (view !== undefined) {
      received.delete(view);
      received.delete(view.buffer);
    }
    if (kept.has(t)) continue;
    givenBack.add(t);
    if (view !== undefined) givenBack.add(view);
    t.release();
  }
}

/** The received TransferableArray that `node` is, or views (through its buffer), if any. */
function receivedFor(node: object): TransferableArray | undefined {
  const known = received.get(node);
  if (known !== undefined || !ArrayBuffer.isView(node)) return known;
  const byBuffer = received.get(node.buffer);
  if (byBuffer !== undefined) return byBuffer;
  for (const delivery of handling) {
    for (const t of delivery.references) if (madeView(t)?.buffer === node.buffer) return t;
  }
  return undefined;
}

/**
 * Keeps the received arrays reachable from `value` (an array or a view of
 * one, a TransferableArray, or the plain objects, arrays, Maps and Sets that
 * hold them, such as the whole message) beyond the handler: `onMessage`
 * then does not release them when the handler is done. Returns `value`.
 * Values that did not arrive through `onMessage` are left alone; an array
 * whose handler already finished (and was released) is ERR_NOT_HELD.
 *
 * ```ts
 * const reply = new Promise((resolve) => onMessage(child, (m) => resolve(keep(m))));
 * ```
 */
export function keep<T>(value: T): T {
  const seen = new Set<object>();
  const visit = (node: unknown): void => {
    if (typeof node !== 'object' || node === null || seen.has(node)) return;
    seen.add(node);
    if (givenBack.has(node)) {
      throw new ArrayPoolError('ERR_NOT_HELD', 'keep: this array was released when its handler finished; call keep() while the handler runs');
    }
    const t = handling.size === 0 ? undefined : receivedFor(node);
    if (t !== undefined) {
      kept.add(t);
      return;
    }
    if (node instanceof TransferableArray || ArrayBuffer.isView(node)) return;
    if (Array.isArray(node)) {
      for (const item of node) visit(item);
    } else if (node instanceof Map) {
      for (const [k, v] of node) {
        visit(k);
        visit(v);
      }
    } else if (node instanceof Set) {
      for (const item of node) visit(item);
    } else if (isPlainObject(node)) {
      for (const key of Object.keys(node)) visit((node as Record<string, unknown>)[key]);
    }
  };
  visit(value);
  return value;
}

/** `keep(message)` for `send`, when some handler is running (else nothing to keep). */
export function keepReceived(message: unknown): void {
  if (handling.size !== 0) keep(message);
}

const isPlainObject = (value: object): boolean => {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
};

const isThenable = (value: unknown): value is PromiseLike<unknown> =>
  (typeof value === 'object' || typeof value === 'function') &&
  value !== null &&
  typeof (value as { then?: unknown }).then === 'function';
