/**
 * The worker_threads competitor of the headline: a worker thread that adds
 * one to `x` into `y` and hands both back. Both buffers move through the
 * transfer list (no copy), and the parent reuses them round after round.
 */
import { parentPort, Worker } from 'node:worker_threads';

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
    return new Promise((resolve, reject) => {
      const settle = (fn) => (value) => {
        this.worker.off('message', onMessage).off('error', onError).off('exit', onExit);
        fn(value);
      };
      const onMessage = settle(resolve);
      const onError = settle(reject);
      const onExit = settle((code) => reject(new Error(`worker thread exited (${code}) before answering`)));
      this.worker.once('message', onMessage).once('error', onError).once('exit', onExit);
      this.worker.postMessage({ x, y }, [x.buffer, y.buffer]);
    });
  }

  terminate() {
    return this.worker.terminate();
  }
}
