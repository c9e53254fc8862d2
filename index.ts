/**
 * arraypool: hand typed arrays between Node.js processes through one
 * shared-memory pool, with no copy and no serialization.
 *
 * ```ts
 * import { makeTransferable, revive, startPool } from 'arraypool';
 * ```
 */
import * as binding from '#binding';

export { ArrayPoolError, type ErrorCode } from './src/errors.js';
export { type DType, type DTypeArrays, type PoolTypedArray } from './src/dtypes.js';
export { COMPACT_HANDLE_FORMAT, HANDLE_FIELDS, HANDLE_FORMAT, type CompactHandle, type TransferableHandle } from './src/handle.js';
export {
  Pool,
  getPool,
  parseSize,
  startPool,
  SEGMENT_ENV,
  SIZE_ENV,
  type BlockHolder,
  type BlockInfo,
  type BlockList,
  type BlocksOptions,
  type CheckResult,
  type PoolOptions,
  type PoolStats,
  type ReapResult,
} from './src/pool.js';
export {
  TransferableArray,
  empty,
  makeTransferable,
  readHandle,
  revive,
  toTransferable,
  zeros,
  type TransferOptions,
} from './src/transferable.js';
export { PoolScope, withPool } from './src/scope.js';
export {
  ProcessPool,
  type ExecOptions,
  type MapChunk,
  type MapOptions,
  type MapProgress,
  type ProcessPoolOptions,
  type TaskArgs,
  type TaskName,
  type TaskResult,
} from './src/process-pool.js';
export {
  DEFAULT_INLINE_BELOW_BYTES,
  DEFAULT_JSON_INLINE_BELOW_BYTES,
  onMessage,
  send,
  type MessageSource,
  type MessageTarget,
  type OnMessageOptions,
  type SendOptions,
  type Serialization,
} from './src/channels.js';
export { DEFAULT_MAX_BYTES_IN_FLIGHT, bytesInFlight } from './src/backpressure.js';
export { keep } from './src/received.js';

/** Version of the shared-memory segment layout compiled into the native addon. */
export function layoutVersion(): number {
  return binding.layoutVersion();
}
