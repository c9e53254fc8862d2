// The hooks only the testing addon has (exports gated behind the `testing`
// cargo feature: fault injection, panics), which the shipped binding.cjs
// does not list. ava.config.mjs points NAPI_RS_NATIVE_LIBRARY_PATH at the
// testing addon, so binding.cjs loaded that very file, and `require` returns
// the instance already loaded: these hooks act on the pools of the package.
import { createRequire } from 'node:module';

const path = process.env.NAPI_RS_NATIVE_LIBRARY_PATH;
if (!path) {
  throw new Error('NAPI_RS_NATIVE_LIBRARY_PATH is unset: run the tests through ava (ava.config.mjs loads the testing addon)');
}

/** The testing addon's exports, test hooks included. */
export const hooks = createRequire(import.meta.url)(path);
