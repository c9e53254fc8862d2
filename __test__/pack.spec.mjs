// What `npm pack` ships: the allowlist below and nothing else, a manifest with
// nothing that runs on a consumer's machine, and every file README links to.
// `npm pack` runs package.json's prepack/postpack (scripts/publish-manifest.mjs),
// which swap the manifest for the length of the pack: the development one must
// come back unchanged. Serial: two packs at once would swap the manifest under each other.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { platformOf } from '../scripts/publish-manifest.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Exact paths, then patterns for the compiled dist/ (one file per source module). */
const ALLOWED = [
  'LICENSE',
  'README.md',
  'package.json',
  'binding.cjs',
  'binding.d.ts',
  'loader.cjs',
  'index.cjs',
  'process-pool-worker-path.cjs',
  'process-pool-worker-path.d.cts',
  'benches/RESULTS.md',
  'benches/results.svg',
  'crates/core/LAYOUT.md',
  'dist/cjs/package.json',
];
const ALLOWED_PATTERNS = [/^dist\/(cjs\/)?(index|src\/[a-z-]+)\.(js|d\.ts)$/, /^examples\/([a-z-]+\.mjs|README\.md)$/];
/** Without these the package does not work. */
const REQUIRED = ['LICENSE', 'README.md', 'binding.cjs', 'loader.cjs', 'index.cjs', 'dist/index.js', 'dist/index.d.ts',
  'dist/cjs/index.js', 'dist/cjs/index.d.ts', 'dist/src/cli.js', 'dist/src/process-pool-worker.js', 'examples/README.md'];

function pack(args) {
  const run = spawnSync('npm', ['pack', '--json', ...args], { cwd: ROOT, encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`npm pack ${args.join(' ')} failed: ${run.stderr}`);
  return JSON.parse(run.stdout)[0];
}

test.serial('npm pack --dry-run ships the allowlist and nothing else', (t) => {
  const devManifest = readFileSync(join(ROOT, 'package.json'), 'utf8');
  const files = pack(['--dry-run']).files.map((f) => f.path);
  t.is(readFileSync(join(ROOT, 'package.json'), 'utf8'), devManifest, 'postpack put the development package.json back');
  t.false(existsSync(join(ROOT, 'package.dev.json')));

  const unexpected = files.filter((f) => !ALLOWED.includes(f) && !ALLOWED_PATTERNS.some((p) => p.test(f)));
  t.deepEqual(unexpected, [], 'files outside the allowlist');
  t.deepEqual(REQUIRED.filter((f) => !files.includes(f)), [], 'required files missing');
  t.false(files.some((f) => f.endsWith('.node')), 'the addon ships in the platform packages, not here');
  t.false(files.some((f) => f.endsWith('.map')), 'no source maps (their sources are not shipped)');

  // Every relative link in README (and examples/README) names a shipped file.
  for (const doc of ['README.md', 'examples/README.md']) {
    const text = readFileSync(join(ROOT, doc), 'utf8');
    const links = [...text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)].map((m) => m[1]).filter((l) => !/^[a-z]+:/.test(l));
    t.true(links.length > 0 || doc !== 'README.md', 'README has relative links to check');
    for (const link of links) {
      const path = join(doc.includes('/') ? 'examples' : '', link).replace(/\/$/, '');
      t.true(files.includes(path) || files.some((f) => f.startsWith(`${path}/`)), `${doc} links to ${link}, which is not shipped`);
    }
  }
});

test.serial('the packed package.json runs nothing on install and lists one optional package per target', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'arraypool-pack-'));
  try {
    const { filename } = pack(['--pack-destination', dir]);
    const tar = spawnSync('tar', ['-xOzf', join(dir, filename), 'package/package.json'], { encoding: 'utf8' });
    t.is(tar.status, 0, tar.stderr);
    const shipped = JSON.parse(tar.stdout);
    const dev = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    t.is(shipped.scripts, undefined, 'no prepare/install/postinstall or any other script');
    t.is(shipped.private, undefined);
    t.is(shipped.devDependencies, undefined);
    t.is(shipped.dependencies, undefined, 'no runtime dependencies');
    t.is(shipped.license, 'MIT');
    t.deepEqual(shipped.exports, dev.exports);
    t.deepEqual(shipped.optionalDependencies, {
      'arraypool-linux-x64-gnu': dev.version,
      'arraypool-linux-x64-musl': dev.version,
      'arraypool-linux-arm64-gnu': dev.version,
      'arraypool-linux-arm64-musl': dev.version,
    });
    t.truthy(dev.scripts.prepare, 'the development manifest keeps its build (a clone builds from source)');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the loader names the prebuilt platforms that package.json builds', (t) => {
  // loader.cjs keeps its own list of platform names (it ships without scripts/'s triple mapping): held to napi.targets here.
  const loader = readFileSync(join(ROOT, 'loader.cjs'), 'utf8');
  const listed = JSON.parse(/const PREBUILT = (\[[^\]]*\])/.exec(loader)?.[1]?.replaceAll("'", '"') ?? 'null');
  const { napi } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  t.deepEqual(listed, napi.targets.map(platformOf));
});

test.serial('npm publish of the directory is refused (npm would upload the development manifest as metadata)', (t) => {
  const run = spawnSync('npm', ['publish', '--dry-run'], { cwd: ROOT, encoding: 'utf8' });
  t.not(run.status, 0);
  t.regex(run.stderr, /do not `npm publish` the repository directory/);
  t.false(existsSync(join(ROOT, 'package.dev.json')), 'the development manifest is in place');
});
