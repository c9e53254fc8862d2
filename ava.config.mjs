// The ava suite runs on the testing addon (`npm run build:testing`: the
// `testing` cargo feature, whose test hooks the shipped addon lacks), not on
// the shipped `arraypool.*.node`. binding.cjs, which napi-rs generates, loads
// whatever `NAPI_RS_NATIVE_LIBRARY_PATH` names instead of the shipped file;
// ava sets it for its test processes, and everything they spawn inherits it.
// `npm test` and `npm run test:node-lines` build the testing addon first.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Absolute: binding.cjs `require`s it, and a relative path would resolve
// against binding.cjs, not against the working directory.
const testingAddon = fileURLToPath(new URL('./target/napi-testing/arraypool.node', import.meta.url));
if (!existsSync(testingAddon)) {
  throw new Error(`the testing addon ${testingAddon} is missing: run \`npm run build:testing\` (npm test builds it)`);
}

export default {
  files: ['__test__/**/*.spec.mjs'],
  workerThreads: false,
  timeout: '2m',
  nodeArguments: ['--expose-gc'],
  environmentVariables: { NAPI_RS_NATIVE_LIBRARY_PATH: testingAddon },
};
