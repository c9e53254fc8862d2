/**
 * README's "Example: a forked worker", as the two files a reader would save:
 * the code block under that heading, split at its `// worker.mjs` line. The
 * stranger and cross-architecture checks run exactly what README shows.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** `{ 'main.mjs': code, 'worker.mjs': code }` from README.md. */
export function readmeExample() {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.split(/^## Example: a forked worker$/m)[1];
  const block = section && /```js\n([\s\S]*?)```/.exec(section)?.[1];
  const [main, worker] = block?.split(/^\/\/ worker\.mjs$/m) ?? [];
  if (!main?.includes('// main.mjs') || !worker) throw new Error('README.md: no "Example: a forked worker" block with main.mjs and worker.mjs');
  return { 'main.mjs': main, 'worker.mjs': `// worker.mjs${worker}` };
}

/** Writes the example into `dir`; `length` replaces its 2e7 elements (slow emulators). */
export function writeReadmeExample(dir, length) {
  for (const [name, code] of Object.entries(readmeExample())) {
    writeFileSync(join(dir, name), length ? code.replace('length: 2e7', `length: ${length}`) : code);
  }
}
