'use strict';
// `require('arraypool')`. Where Node can require() an ES module (20.19+,
// 22.12+, 24 and 26 by default), this is the ES module build itself, so a
// process that both imports and requires arraypool (an ESM app with a CommonJS
// dependency, a ProcessPool task module written in CommonJS) has one copy of
// its state: one pool, one registry of arrays, `instanceof` that holds. Older
// Node 20 and 22 releases get the CommonJS build (dist/cjs, `npm run build:ts`),
// a second copy: there, a process should load arraypool one way only.
module.exports = process.features.require_module ? require('./dist/index.js') : require('./dist/cjs/index.js');
