/**
 * Scenario 7's consumer: receives frames `{ op: 'frame', seq, frame }`, sums
 * each one, lets go of it and acknowledges it with `{ op: 'ack', seq, sum }`.
 * It runs in a forked child (child.mjs, role `frame-consumer <mode>`) or in a
 * worker thread (this file, started by FrameThread). Modes:
 *
 * - `clone`: the frame is a plain Float64Array (the channel cloned it).
 * - `transfer`: the same, and the ack hands the frame's buffer back through
 *   the transfer list, so the producer reuses it (threads only).
 * - `arraypool`: messages come through arraypool's `onMessage`; the frame is
 *   a TransferableArray, released here once summed, before the ack.
 *
 * `{ op: 'gc' }` runs a full GC here and answers `{ op: 'gc' }` (between
 * rounds); a failure answers `{ op: 'error', message }`.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

import { onMessage } from '../../dist/index.js';
import { collectGarbage, nextMessage } from './children.mjs';
import { sumFrame } from './frames.mjs';

const MODES = new Set(['clone', 'transfer', 'arraypool']);

/**
 * Serves frames arriving on `port` (`process` in a child, `parentPort` in a
 * thread) in `mode`; `reply(message, transferList?)` answers the producer.
 */
export function consumeFrames(port, mode, reply) {
  if (!MODES.has(mode)) throw new Error(`frame consumer: unknown mode ${JSON.stringify(mode)}`);
  const fail = (error) => reply({ op: 'error', message: error?.stack ?? String(error) });
  const handle = async (msg) => {
    try {
      if (msg?.op === 'gc') {
        await collectGarbage();
        reply({ op: 'gc' });
      } else if (msg?.op !== 'frame') {
        throw new Error(`unexpected message ${JSON.stringify(msg)}`);
      } else if (mode === 'arraypool') {
        const sum = sumFrame(msg.frame.array);
        msg.frame.release(); // explicit: the block is free again before the producer hears of it
        reply({ op: 'ack', seq: msg.seq, sum });
      } else if (mode === 'transfer') {
        reply({ op: 'ack', seq: msg.seq, sum: sumFrame(msg.frame), frame: msg.frame }, [msg.frame.buffer]);
      } else {
        reply({ op: 'ack', seq: msg.seq, sum: sumFrame(msg.frame) });
      }
    } catch (error) {
      fail(error);
    }
  };
  if (mode === 'arraypool') onMessage(port, handle, { onError: fail });
  else port.on('message', handle);
}

if (!isMainThread && workerData?.frameConsumer) {
  consumeFrames(parentPort, workerData.frameConsumer, (message, transfer) => parentPort.postMessage(message, transfer));
  parentPort.postMessage({ op: 'ready' });
}

/** A worker thread consuming frames in `mode`; `worker` is where frames go and acks come from. */
export class FrameThread {
  constructor(mode) {
    this.worker = new Worker(new URL(import.meta.url), { workerData: { frameConsumer: mode } });
  }

  /** Sends `message` and resolves with the thread's next message. */
  request(message) {
    const answer = nextMessage(this.worker, 'frame consumer thread');
    this.worker.postMessage(message);
    return answer;
  }

  async ready() {
    const msg = await nextMessage(this.worker, 'frame consumer thread');
    if (msg?.op !== 'ready') throw new Error(`frame consumer thread: expected 'ready', got ${JSON.stringify(msg)}`);
  }

  stop() {
    return this.worker.terminate();
  }
}
