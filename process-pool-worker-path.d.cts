/** Absolute path of ProcessPool's worker script (dist/src/process-pool-worker.js). */
export declare const processPoolWorker: string;
