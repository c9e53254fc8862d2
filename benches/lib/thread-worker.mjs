/**
 * The worker_threads competitor of the headline: a worker thread that adds
 * one to `x` into `y` and hands both back. Both buffers move through the
 * transfer list (no copy), and the parent reuses them round after round.
 */
import { parentPort, Worker } from 'node:worker_threads';

import { nextMessage } from './children.mjs';
import { addOne } from './compute.mjs';

if (parentPort) {
  parentPort.on('message', ({ x, y }) => {
    addOne(x, y);
    parentPort.postMessage({ x, y }, [x.buffer, y.buffer]);
  });
}

/** A worker thread running this file; `request` sends x and y and resolves with them back. */
export class ThreadWorker {
  constructor() {
    this.worker = new Worker(new URL(import.meta.url));
  }

  request(x, y) {
    const answer = nextMessage(this.worker, 'worker thread');
    this.worker.postMessage({ x, y }, [x.buffer, y.buffer]);
    return answer;
  }

  terminate() {
    return this.worker.terminate();
  }
}
