/**
 * Where the shm-typed-array competitor's addon is built for the running
 * Node, and loading it with the whole reason when it does not load.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const require = createRequire(import.meta.url);

/** The per-ABI copy of shm-typed-array that benches/build-shm-typed-array.mjs builds. */
export function shmBuildDir(root) {
  return join(root, 'node_modules', '.cache', 'shm-typed-array', `abi-${process.versions.modules}`);
}

/** `{ module }`, or `{ error }` with every line of the reason (e.g. NODE_MODULE_VERSION …). */
export function loadShmTypedArray(root) {
  const dir = shmBuildDir(root);
  if (!existsSync(join(dir, 'build', 'Release', 'shm.node'))) {
    return { error: `no build for Node ${process.version} (ABI ${process.versions.modules}) in ${dir}` };
  }
  try {
    return { module: require(dir) };
  } catch (error) {
    return { error: String(error?.message ?? error).trim().replace(/\s*\n\s*/g, ' ') };
  }
}
