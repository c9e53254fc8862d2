'use strict';
// Where ProcessPool's worker script is (package.json "imports"
// `#process-pool-worker`), for the ES module and the CommonJS builds alike: the
// CommonJS build has no `import.meta.url` to find it by. The worker always runs
// the ES module build (a worker is its own process: no state to share).
exports.processPoolWorker = require('node:path').join(__dirname, 'dist', 'src', 'process-pool-worker.js');
