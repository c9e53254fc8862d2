#!/usr/bin/env node
/**
 * `npm run build:ts`: index.ts and src/ to dist/ twice, as ES modules
 * (dist/, tsconfig.json: `import`, the CLI, the demo, ProcessPool's worker)
 * and as CommonJS (dist/cjs/, tsconfig.cjs.json: `require` on Node releases
 * without require(esm), see index.cjs), each with its declarations.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

for (const project of ['tsconfig.json', 'tsconfig.cjs.json']) {
  const run = spawnSync(process.execPath, [tsc, '-p', project], { cwd: root, stdio: 'inherit' });
  if (run.status !== 0) process.exit(run.status ?? 1);
}
// dist/cjs/*.js are CommonJS inside a "type": "module" package: this marker
// tells Node (and TypeScript, for dist/cjs/*.d.ts) so. It also makes dist/cjs
// a package scope of its own, where the root's "imports" (`#binding`, ...) do
// not resolve, and an "imports" target may not leave its scope: the CommonJS
// build requires those files by relative path instead.
const cjs = join(root, 'dist', 'cjs');
const imports = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).imports;
for (const entry of readdirSync(cjs, { recursive: true })) {
  if (!entry.endsWith('.js')) continue;
  const file = join(cjs, entry);
  let code = readFileSync(file, 'utf8');
  for (const [specifier, target] of Object.entries(imports)) {
    const path = relative(dirname(file), join(root, target.default));
    code = code.replaceAll(`require("${specifier}")`, `require("./${path}")`.replace('"./../', '"../'));
  }
  writeFileSync(file, code);
}
writeFileSync(join(root, 'dist', 'cjs', 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`);
chmodSync(join(root, 'dist', 'src', 'cli.js'), 0o755);
