#!/usr/bin/env node
/**
 * Runs the Python package's tests (pytest, crates/python/tests) in the
 * project's `.venv`. Without python3 (so without .venv) it says so in one
 * line and passes. The tests that start Node children need the built
 * `dist/` (npm run build).
 *
 *   node scripts/python-test.mjs [pytest args]     (npm run test:python)
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const python = join(root, '.venv', 'bin', 'python');
/** Written by python:setup once the package is built (see python-setup.mjs). */
const ready = join(root, '.venv', '.arraypool-ready');
const required = process.env.ARRAYPOOL_PYTHON_REQUIRED === '1';

if (!existsSync(ready)) {
  const hasPython = spawnSync('python3', ['--version'], { stdio: 'ignore' }).status === 0;
  if (!hasPython && !required) {
    console.log('python-test: python3 not found, skipping the Python tests');
    process.exit(0);
  }
  if (!required && existsSync(python)) {
    console.log('python-test: the Python package was not built (python:setup failed, see its message), skipping the Python tests');
    process.exit(0);
  }
  console.error('python-test: the Python package is not built: run `npm run python:setup` first');
  process.exit(1);
}
const result = spawnSync(python, ['-m', 'pytest', ...process.argv.slice(2)], {
  stdio: 'inherit',
  cwd: join(root, 'crates', 'python'),
});
process.exit(result.status ?? 1);
