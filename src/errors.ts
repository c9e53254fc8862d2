/**
 * Errors thrown by arraypool. Every error carries a stable `code`; the
 * native codes come from the Rust core (`PoolError::code`) unchanged.
 */
export type ErrorCode =
  | 'ERR_STALE_HANDLE'
  | 'ERR_INVALID_HANDLE'
  | 'ERR_SEGMENT_NOT_FOUND'
  | 'ERR_POOL_FULL'
  | 'ERR_NO_SPACE'
  | 'ERR_UNSUPPORTED_DTYPE'
  | 'ERR_TOO_LARGE'
  | 'ERR_EXTERNAL_BUFFERS_UNSUPPORTED'
  | 'ERR_INVALID_SHAPE'
  | 'ERR_INVALID_ARG'
  | 'ERR_INVALID_NAME'
  | 'ERR_INVALID_SEGMENT'
  | 'ERR_CORRUPT_SEGMENT'
  | 'ERR_INTERNAL'
  | 'ERR_INVALID_CAPACITY'
  | 'ERR_TOO_MANY_PROCESSES'
  | 'ERR_LOCK_TIMEOUT'
  | 'ERR_NOT_HELD'
  | 'ERR_POOL_CLOSED'
  | 'ERR_OS'
  | 'ERR_NAPI'
  | 'ERR_WORKER_DIED'
  | 'ERR_ABORTED'
  | 'ERR_UNKNOWN_TASK'
  | 'ERR_PROCESS_POOL_CLOSED'
  | 'ERR_NOT_SERIALIZABLE'
  | 'ERR_CHANNEL_CLOSED';

export class ArrayPoolError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ArrayPoolError';
    this.code = code;
  }
}

/** Re-throws a native error (plain Error with an `ERR_*` code) as an ArrayPoolError. */
export function rethrow(error: unknown): never {
  if (error instanceof ArrayPoolError) throw error;
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_')) {
      throw new ArrayPoolError(code as ErrorCode, error.message);
    }
  }
  throw error;
}

/** Calls a native function, converting its errors. */
export function native<T>(call: () => T): T {
  try {
    return call();
  } catch (error) {
    rethrow(error);
  }
}
