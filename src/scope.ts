/**
 * Scopes that release every TransferableArray created inside them:
 * `withPool(fn)` (pyarraypool's `object_pool()`) and, on Node >= 24,
 * `using scope = withPool()` / `await using scope = withPool()`.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

import type { TransferableArray } from './transferable.js';

/** The innermost scope of the current async context. */
const current = new AsyncLocalStorage<PoolScope>();

/**
 * A set of TransferableArrays released together. Made by `withPool()`; an
 * array joins the innermost scope that is still open when it is created
 * (made, allocated, sliced, copied or revived).
 */
export class PoolScope implements Disposable, AsyncDisposable {
  readonly #arrays = new Set<TransferableArray>();
  readonly #outer: PoolScope | undefined;
  #open = true;

  /** @internal Use withPool. */
  constructor(outer: PoolScope | undefined) {
    this.#outer = outer;
  }

  /** False once released. */
  get open(): boolean {
    return this.#open;
  }

  /** How many arrays the scope holds now. */
  get size(): number {
    return this.#arrays.size;
  }

  /** @internal Adds `array` to the innermost open scope of this chain. */
  adopt(array: TransferableArray): void {
    for (let scope: PoolScope | undefined = this; scope; scope = scope.#outer) {
      if (scope.#open) {
        scope.#arrays.add(array);
        return;
      }
    }
  }

  /** Releases every array of the scope and closes it. Idempotent. */
  release(): void {
    if (!this.#open) return;
    this.#open = false;
    for (const array of this.#arrays) array.release();
    this.#arrays.clear();
    // Opened by `using`: later code of this async context goes back to the outer scope.
    if (current.getStore() === this) current.enterWith(this.#outer as PoolScope);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.release();
    return Promise.resolve();
  }
}

/** @internal Called by every new TransferableArray. */
export function adoptIntoScope(array: TransferableArray): void {
  current.getStore()?.adopt(array);
}

/**
 * With `fn`: runs it (sync or async) in a new scope and releases every
 * TransferableArray created in it when it returns, throws, or its promise
 * settles; returns what `fn` returns. Arrays that must outlive the scope are
 * copied out (`toArray()`) or re-made.
 *
 * Without `fn`: opens a scope for the rest of the current function and
 * returns it, for `using scope = withPool()` or `await using scope =
 * withPool()` (Node >= 24), or an explicit `scope.release()`. Open it at the
 * top of the block: in an async function, code of the caller that runs
 * between the function's first `await` and the scope's end also lands in it.
 */
export function withPool(): PoolScope;
export function withPool<R>(fn: () => R): R;
export function withPool<R>(fn?: () => R): R | PoolScope {
  const scope = new PoolScope(current.getStore());
  if (fn === undefined) {
    current.enterWith(scope);
    return scope;
  }
  let result: R;
  try {
    result = current.run(scope, fn);
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
