/**
 * Scopes that release TransferableArrays together: `withPool(fn)`
 * (pyarraypool's `object_pool()`) and, on Node >= 24, `using scope =
 * withPool()` / `await using scope = withPool()`.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

import type { TransferableArray } from './transferable.js';

/** The scope whose `run` is on the stack (or whose async work this is). */
const current = new AsyncLocalStorage<PoolScope>();
/** Some scope ran: until then no array can be in one, and `getStore()` (tens of ns) is skipped on every make. */
let anyScopeRan = false;

/**
 * A set of TransferableArrays released together. An array joins it when it
 * is created (made, allocated, sliced, copied or revived) inside
 * `scope.run(fn)` or `withPool(fn)`, including `fn`'s async continuations,
 * or when it is given to `scope.adopt()`. Nothing else joins it: arrays of
 * concurrent tasks, or of the code around it, never do.
 */
export class PoolScope implements Disposable, AsyncDisposable {
  readonly #arrays = new Set<TransferableArray>();
  #open = true;

  /** False once released. */
  get open(): boolean {
    return this.#open;
  }

  /** How many arrays the scope holds now. */
  get size(): number {
    return this.#arrays.size;
  }

  /**
   * Adds `array` to the scope and returns it. On a released scope the array
   * is released at once (it cannot outlive a scope that has ended).
   */
  adopt<T extends TransferableArray>(array: T): T {
    if (this.#open) this.#arrays.add(array);
    else array.release();
    return array;
  }

  /**
   * Runs `fn` with this scope as the current one: every TransferableArray
   * created by it (also after its awaits) joins the scope. Returns what `fn`
   * returns; the scope stays open.
   */
  run<R>(fn: () => R): R {
    anyScopeRan = true;
    return current.run(this, fn);
  }

  /** Releases every array of the scope and closes it. Idempotent. */
  release(): void {
    if (!this.#open) return;
    this.#open = false;
    const arrays = [...this.#arrays];
    this.#arrays.clear();
    let failure: unknown;
    for (const array of arrays) {
      try {
        array.release();
      } catch (error) {
        failure ??= error; // release the rest first
      }
    }
    if (failure !== undefined) throw failure;
  }

  [Symbol.dispose](): void {
    this.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    try {
      this.release();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }
}

/** @internal Called by every new TransferableArray. */
export function adoptIntoScope(array: TransferableArray): void {
  if (anyScopeRan) current.getStore()?.adopt(array);
}

/**
 * With `fn`: runs it (sync or async) in a new scope and releases every
 * TransferableArray created in it when it returns, throws, or its promise
 * settles; returns what `fn` returns. Arrays that must outlive the scope are
 * copied out (`toArray()`) or re-made.
 *
 * Without `fn`: returns a new, empty `PoolScope` for `using scope =
 * withPool()` or `await using scope = withPool()` (Node >= 24); arrays join
 * it through `scope.run(fn)` or `scope.adopt(array)`, and are released when
 * the block ends (or on `scope.release()`).
 */
export function withPool(): PoolScope;
export function withPool<R>(fn: () => R): R;
export function withPool<R>(fn?: () => R): R | PoolScope {
  const scope = new PoolScope();
  if (fn === undefined) return scope;
  let result: R;
  try {
    result = scope.run(fn);
  } catch (error) {
    scope.release();
    throw error;
  }
  if (typeof (result as { then?: unknown } | null)?.then === 'function') {
    // Any thenable: release once it settles, not while its work goes on.
    return Promise.resolve(result).finally(() => scope.release()) as R;
  }
  scope.release();
  return result;
}
