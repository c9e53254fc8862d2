#!/usr/bin/env node
/**
 * Builds the Python package (crates/python) into a project-local virtual
 * environment, `.venv` (ignored by git): creates it with `python3 -m venv`,
 * installs maturin, numpy and pytest from PyPI into it, and builds and
 * installs the extension with `maturin develop --release`.
 *
 * Without python3 it says so in one line and does nothing. Idempotent, and
 * quick when nothing changed: the build is skipped while the installed
 * extension is newer than every source it is built from.
 *
 *   node scripts/python-setup.mjs          (npm run python:setup)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const venv = join(root, '.venv');
const python = join(venv, 'bin', 'python');
const crate = join(root, 'crates', 'python');
const extension = join(crate, 'python', 'arraypool', '_native.abi3.so');
/** What the Python package needs from PyPI (pyproject's build and test needs). */
const REQUIREMENTS = ['maturin>=1.5,<2', 'numpy>=1.22', 'pytest>=7'];

/**
 * Set in CI: a failed setup fails. Elsewhere it warns and lets `npm install`
 * finish (the Node package does not need Python; PyPI may be unreachable),
 * and the Python tests then skip, saying why.
 */
const required = process.env.ARRAYPOOL_PYTHON_REQUIRED === '1';
/** Written once the package is built and importable; the test runners look for it. */
const ready = join(venv, '.arraypool-ready');

function run(command, args, options = {}) {
  console.log(`+ ${[command, ...args].join(' ')}`);
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: root, ...options });
  if (result.status !== 0 || result.error) {
    const why = result.error?.message ?? `exit ${result.status ?? result.signal}`;
    console.error(`python-setup: ${command} failed (${why}): the Python package is not built${required ? '' : '; the Python tests will skip'}`);
    process.exit(required ? 1 : 0);
  }
}

const succeeds = (command, args) => spawnSync(command, args, { stdio: 'ignore', cwd: root }).status === 0;

/** The newest modification time of the files under `path` (one file or a directory tree). */
function newest(path) {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  let latest = 0;
  for (const entry of readdirSync(path)) latest = Math.max(latest, newest(join(path, entry)));
  return latest;
}

if (!succeeds('python3', ['--version'])) {
  console.log('python-setup: python3 not found, skipping the Python package (arraypool for Python)');
  process.exit(0);
}
if (!existsSync(python)) run('python3', ['-m', 'venv', venv]);
rmSync(ready, { force: true });
if (!succeeds(python, ['-c', 'import maturin, numpy, pytest'])) {
  run(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...REQUIREMENTS]);
}
const sources = [
  join(crate, 'src'),
  join(crate, 'Cargo.toml'),
  join(crate, 'pyproject.toml'),
  join(root, 'crates', 'core', 'src'),
  join(root, 'crates', 'core', 'Cargo.toml'),
  join(root, 'Cargo.lock'),
];
const built = existsSync(extension) && succeeds(python, ['-c', 'import arraypool']);
if (built && statSync(extension).mtimeMs > Math.max(...sources.map(newest))) {
  console.log('python-setup: the Python package is up to date in .venv');
  writeFileSync(ready, '');
  process.exit(0);
}
run(join(venv, 'bin', 'maturin'), ['develop', '--release', '--manifest-path', join(crate, 'Cargo.toml')], {
  env: { ...process.env, VIRTUAL_ENV: venv, PATH: `${join(venv, 'bin')}:${process.env.PATH ?? ''}` },
});
writeFileSync(ready, '');
