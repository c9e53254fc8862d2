/**
 * The program a ProcessPool forks: attaches to the parent's pool, imports
 * the task module once, then runs one task at a time as the parent sends
 * them. Not part of the public API.
 */
import { decodeMessage, encodeMessage, markAllSent, releaseAll } from './channels.js';
import { ArrayPoolError } from './errors.js';
import { startPool } from './pool.js';
import type { FromWorker, RemoteError, ToWorker, WorkerConfig } from './process-pool.js';
import type { TransferableArray } from './transferable.js';

type TaskFunction = (...args: unknown[]) => unknown;

/** What importing the task module gave: its namespace, or why it failed (every task reports it). */
type TaskModule = { namespace: Record<string, unknown> } | { loadError: unknown };

const PARENT_GONE = new Set(['EPIPE', 'ECONNRESET', 'ERR_IPC_CHANNEL_CLOSED']);

const config = JSON.parse(process.argv[2] ?? '{}') as WorkerConfig;

/** Result references kept until the parent has attached them ('taken'). */
const heldResults = new Map<number, TransferableArray[]>();

// The parent closing the pool (or dying) disconnects us: leave, which drops
// every reference this process still holds.
process.on('disconnect', () => process.exit(0));
// A parent that died (Ctrl-C, SIGKILL) while we computed: our answer's write
// fails (EPIPE, or ERR_IPC_CHANNEL_CLOSED once Node has noticed) before the
// 'disconnect' arrives. Nobody is left to answer: leave quietly, as on
// 'disconnect', instead of dying of an unhandled 'error' event.
process.on('error', (error: NodeJS.ErrnoException) => {
  if (PARENT_GONE.has(error.code ?? '')) process.exit(0);
  throw error;
});
startPool();
const tasks = await loadTasks(config.moduleUrl);
if (!process.connected) process.exit(0);
process.on('message', (message: ToWorker) => {
  if (message.kind === 'run') void runTask(message.id, message.name, message.args);
  else letGoOfResult(message.id);
});
reply({ kind: 'ready' });

async function loadTasks(url: string): Promise<TaskModule> {
  try {
    return { namespace: (await import(url)) as Record<string, unknown> };
  } catch (loadError) {
    return { loadError };
  }
}

function findTask(name: string): TaskFunction {
  if ('loadError' in tasks) throw tasks.loadError;
  const { namespace } = tasks;
  const fallback = namespace.default;
  // Own properties only: a task named 'toString' must not find Object's.
  const candidate = Object.hasOwn(namespace, name)
    ? namespace[name]
    : typeof fallback === 'object' && fallback !== null && Object.hasOwn(fallback, name)
      ? (fallback as Record<string, unknown>)[name]
      : undefined;
  if (typeof candidate !== 'function') {
    throw new ArrayPoolError('ERR_UNKNOWN_TASK', `the task module ${config.moduleUrl} exports no function "${name}"`);
  }
  return candidate as TaskFunction;
}

async function runTask(id: number, name: string, encodedArgs: unknown): Promise<void> {
  const args: TransferableArray[] = [];
  let answer: Answer;
  try {
    const task = findTask(name);
    const decoded = decodeMessage(encodedArgs, { plainArrays: true, json: config.json });
    args.push(...decoded.references);
    answer = encodeResult(id, await task(...(decoded.message as unknown[])));
  } catch (error) {
    answer = { message: failure(id, error), references: [], toMark: [] };
  }
  // Before answering (the result, once encoded, holds its own references):
  // when the parent hears back, this process holds none of the arguments.
  releaseAll(args);
  answerParent(id, answer);
}

interface Answer {
  message: FromWorker;
  /** The result's references, kept until the parent has attached them. */
  references: TransferableArray[];
  /** Arrays whose handles the result carries: marked as sent when it is sent. */
  toMark: TransferableArray[];
}

/**
 * Plain typed arrays are copied into the pool (pool views are not); the
 * TransferableArrays a task returns are handed over, i.e. released here
 * once the parent has them. Copies need no transferRequired: this process
 * holds them until the parent has attached them.
 */
function encodeResult(id: number, value: unknown): Answer {
  const result = encodeMessage(value, {
    inlineBelowBytes: config.inlineBelowBytes,
    json: config.json,
    transferRequired: false,
    adopt: true,
  });
  const held = result.references.length > 0;
  return {
    message: { kind: 'settled', id, ok: true, value: result.message, held },
    references: result.references,
    toMark: result.toMark,
  };
}

function answerParent(id: number, answer: Answer): void {
  try {
    markAllSent(answer);
    reply(answer.message);
  } catch (error) {
    // The result could not be serialized (e.g. it holds a function).
    releaseAll(answer.references);
    reply(failure(id, error));
    return;
  }
  if (answer.references.length > 0) heldResults.set(id, answer.references);
}

const failure = (id: number, error: unknown): FromWorker => ({ kind: 'settled', id, ok: false, error: toRemote(error) });

function letGoOfResult(id: number): void {
  releaseAll(heldResults.get(id) ?? []);
  heldResults.delete(id);
}

/** Throws synchronously if the message cannot be serialized (e.g. a function in a result). */
function reply(message: FromWorker): void {
  process.send?.(message);
}

function toRemote(error: unknown): RemoteError {
  if (!(error instanceof Error)) return { name: 'Error', message: `task threw a non-error: ${String(error)}` };
  const code = (error as { code?: unknown }).code;
  return {
    name: error.name,
    message: error.message,
    ...(error.stack === undefined ? {} : { stack: error.stack }),
    ...(typeof code === 'string' ? { code } : {}),
  };
}
