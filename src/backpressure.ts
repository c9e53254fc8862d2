/**
 * Backpressure for `send`: each channel (each target object) has a budget
 * of bytes in flight. The bytes are those of the pool copies `send` made
 * for the channel and that nobody has given back yet: a copy counts from
 * the moment it is made until its block is freed, which happens when the
 * receiver releases it (`onMessage` does so when the handler is done,
 * unless the handler keeps it). `send` waits, before it copies anything,
 * while the channel's bytes in flight are at or above the budget, so the
 * pool holds at most the budget plus one message per channel.
 *
 * How the sender learns that a copy was given back: it keeps each copy's
 * (pool, offset, generation) and asks the pool whether that block still
 * exists (`blockOutstanding`, a few atomic reads, no lock), at each send
 * that finds the channel full and then on a short timer while a send
 * waits. No answer message: the channel carries only what the caller
 * sends, and a receiver that is not arraypool's `onMessage` (or one that
 * crashed and was reaped) frees the blocks all the same.
 *
 * Sends on one channel leave in call order: a send that finds others
 * waiting waits behind them.
 */
import * as binding from '#binding';
import { ArrayPoolError } from './errors.js';
import type { TransferableArray } from './transferable.js';
import { handleFieldsOf } from './transferable.js';

/** The default budget of a channel: 64 MiB of pool copies in flight. */
export const DEFAULT_MAX_BYTES_IN_FLIGHT = 64 * 1024 * 1024;

/** First and longest pause between two polls while a send waits, in ms. */
const FIRST_POLL_MS = 1;
const LONGEST_POLL_MS = 4;

interface Flight {
  readonly poolId: number;
  readonly offset: number;
  readonly generation: number;
  readonly bytes: number;
}

interface Waiter {
  readonly limit: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  readonly cleanup: () => void;
}

/** What a channel's target is asked about: whether its other end can still give blocks back. */
export interface ChannelEnd {
  /** True while the channel is up. */
  readonly isOpen: () => boolean;
}

class ChannelBudget {
  bytes = 0;
  readonly #flights = new Set<Flight>();
  readonly #waiters: Waiter[] = [];
  readonly #end: ChannelEnd;
  #timer: NodeJS.Timeout | undefined;
  #pause = FIRST_POLL_MS;
  /**
   * A waiter was let go and has not copied yet: nothing else may start
   * before it has (call order), whatever its limit.
   */
  #admitting = false;

  constructor(end: ChannelEnd) {
    this.#end = end;
  }

  /**
   * Resolves when a send with this budget may copy and send: at once
   * (undefined, no promise) when nobody waits and the channel has room.
   */
  admit(limit: number, signal: AbortSignal | undefined): Promise<void> | undefined {
    if (signal?.aborted) throw aborted(signal);
    if (this.#waiters.length === 0 && !this.#admitting) {
      if (this.bytes >= limit) this.settle();
      if (this.bytes < limit) return undefined;
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(aborted(signal as AbortSignal));
        // The next one may fit where this one did not.
        this.next();
      };
      const waiter: Waiter = {
        limit,
        resolve,
        reject,
        cleanup: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
      this.#schedule();
    });
  }

  /** Whether the channel's other end is still there. */
  get open(): boolean {
    return this.#end.isOpen();
  }

  /** Counts the copies a send made for this channel. */
  add(copies: readonly TransferableArray[]): void {
    for (const copy of copies) {
      const handle = handleFieldsOf(copy);
      const flight: Flight = { poolId: copy.poolId, offset: handle.offset, generation: handle.generation, bytes: copy.byteLength };
      this.#flights.add(flight);
      this.bytes += flight.bytes;
    }
  }

  /** Called by a send that was let go once it has copied (or failed to): the next may go. */
  admitted(): void {
    this.#admitting = false;
    this.next();
  }

  /** Lets the first waiting send go if it fits and none let go before it is still copying. */
  next(): void {
    const first = this.#waiters[0];
    if (first === undefined || this.#admitting) return;
    if (!this.#end.isOpen()) {
      this.#failAll(new ArrayPoolError('ERR_CHANNEL_CLOSED', 'send: the channel closed while the message waited for room'));
      return;
    }
    if (this.bytes >= first.limit) return;
    this.#waiters.shift();
    first.cleanup();
    this.#admitting = true;
    first.resolve();
  }

  /** Forgets the copies whose blocks were freed. */
  settle(): void {
    for (const flight of this.#flights) {
      let outstanding: boolean;
      try {
        outstanding = binding.blockOutstanding(flight.poolId, flight.offset, flight.generation);
      } catch {
        outstanding = false; // the pool is gone: nothing of it can be waited for
      }
      if (!outstanding) {
        this.#flights.delete(flight);
        this.bytes -= flight.bytes;
      }
    }
  }

  #schedule(): void {
    if (this.#timer !== undefined) return;
    // Unref'd: a wait that nothing else keeps the process alive for cannot
    // end (no receiver is left to give the bytes back).
    this.#timer = setTimeout(() => this.#poll(), this.#pause).unref();
  }

  #poll(): void {
    this.#timer = undefined;
    const before = this.bytes;
    this.settle();
    this.next();
    if (this.#waiters.length === 0) {
      this.#pause = FIRST_POLL_MS;
      return;
    }
    // Poll often while blocks come back, less often while none do.
    this.#pause = this.bytes < before ? FIRST_POLL_MS : Math.min(this.#pause * 2, LONGEST_POLL_MS);
    this.#schedule();
  }

  #failAll(error: unknown): void {
    for (const waiter of this.#waiters.splice(0)) {
      waiter.cleanup();
      waiter.reject(error);
    }
  }
}

const budgets = new WeakMap<object, ChannelBudget>();

/** The budget of the channel to `target`, made on first use (with `end()` asked once then). */
export function channelBudget(target: object, end: () => ChannelEnd): ChannelBudget {
  let budget = budgets.get(target);
  if (budget === undefined) {
    budget = new ChannelBudget(end());
    budgets.set(target, budget);
  }
  return budget;
}

/** Bytes of the pool copies `send` made for `target` that are not given back yet (diagnostics, tests). */
export function bytesInFlight(target: object): number {
  const budget = budgets.get(target);
  budget?.settle();
  return budget?.bytes ?? 0;
}

/** Checks a `maxBytesInFlight` option; undefined gives the default. */
export function maxBytesInFlight(value: number | undefined): number {
  if (value === undefined) return DEFAULT_MAX_BYTES_IN_FLIGHT;
  if (typeof value !== 'number' || !(value > 0)) {
    throw new ArrayPoolError('ERR_INVALID_ARG', `maxBytesInFlight must be a number > 0 (Infinity for no limit), got ${String(value)}`);
  }
  return value;
}

function aborted(signal: AbortSignal): ArrayPoolError {
  return new ArrayPoolError('ERR_ABORTED', 'send: aborted while waiting for room in the channel', { cause: signal.reason });
}
