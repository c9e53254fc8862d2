/**
 * What `onMessage` received, and when it is given back. The arrays of a
 * message (plain typed arrays viewing the pool, and TransferableArrays) are
 * released as soon as the handler is done with the message: when it
 * returns, or when the promise it returns settles. That frees their blocks
 * at once instead of at the next garbage collection, and it is what lets a
 * sender waiting on its channel's budget go on (see backpressure.ts).
 *
 * A handler that needs an array longer calls `keep(value)` while it runs:
 * every received array reachable from `value` is left to the old rules (a
 * plain array is freed when garbage-collected, a TransferableArray by its
 * `release()`). Kept arrays still count against the sender's budget until
 * they are freed. `onMessage(…, { autoRelease: false })` keeps everything.
 */
import { ArrayPoolError } from './errors.js';
import { TransferableArray, madeView } from './transferable.js';

/**
 * The TransferableArray behind each array of a message whose handler has
 * not finished: the array itself for a plain typed array, the
 * TransferableArray for itself. A TransferableArray's view is looked up when
 * `keep` meets a typed array it does not know (views are made lazily: one
 * the handler never read does not exist).
 */
const received = new WeakMap<object, TransferableArray>();
/** The references of the messages whose handlers run, for that lookup. */
const handling = new Set<readonly TransferableArray[]>();
const kept = new WeakSet<TransferableArray>();
/** Received arrays given back already: keeping one is an error, not a silent empty array. */
const givenBack = new WeakSet<object>();

/** Records the arrays of a message about to be handled. */
export function receive(references: readonly TransferableArray[]): void {
  for (const t of references) {
    received.set(t, t);
    const view = madeView(t);
    if (view !== undefined) received.set(view, t);
  }
  handling.add(references);
}

/** The received TransferableArray whose view `array` is, if any. */
function receivedFor(array: object): TransferableArray | undefined {
  const known = received.get(array);
  if (known !== undefined || !ArrayBuffer.isView(array)) return known;
  for (const references of handling) {
    for (const t of references) if (madeView(t) === array) return t;
  }
  return undefined;
}

/**
 * Runs `handler(message)`, then releases the message's arrays that were not
 * kept: after it returns, or after the promise it returns settles (a
 * rejection still reaches the caller).
 */
export function handleThenRelease(handle: () => unknown, references: readonly TransferableArray[]): unknown {
  let result: unknown;
  try {
    result = handle();
  } catch (error) {
    giveBack(references);
    throw error;
  }
  if (isThenable(result)) {
    return Promise.resolve(result).finally(() => giveBack(references));
  }
  giveBack(references);
  return result;
}

function giveBack(references: readonly TransferableArray[]): void {
  handling.delete(references);
  for (const t of references) {
    const view = madeView(t);
    received.delete(t);
    if (view !== undefined) received.delete(view);
    if (kept.has(t)) continue;
    givenBack.add(t);
    if (view !== undefined) givenBack.add(view);
    t.release();
  }
}

/**
 * Keeps the received arrays reachable from `value` (an array, a
 * TransferableArray, or the plain objects, arrays, Maps and Sets that hold
 * them, such as the whole message) beyond the handler: `onMessage` then
 * does not release them when the handler is done. Returns `value`.
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
    const t = receivedFor(node);
    if (t !== undefined) {
      kept.add(t);
      return;
    }
    if (givenBack.has(node)) {
      throw new ArrayPoolError('ERR_NOT_HELD', 'keep: this array was released when its handler finished; call keep() while the handler runs');
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

const isPlainObject = (value: object): boolean => {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
};

const isThenable = (value: unknown): value is PromiseLike<unknown> =>
  (typeof value === 'object' || typeof value === 'function') &&
  value !== null &&
  typeof (value as { then?: unknown }).then === 'function';
