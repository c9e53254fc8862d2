#!/usr/bin/env node
/**
 * The package.json that `npm pack` / `npm publish` ship, written over the
 * development one for the length of the pack (package.json's `prepack`) and
 * put back after (`postpack`):
 *
 *   node scripts/publish-manifest.mjs write     # prepack
 *   node scripts/publish-manifest.mjs restore   # postpack
 *
 * Why: a clone's `npm install` must build the addon from source (`prepare`),
 * and nothing of that may reach consumers, who get prebuilt binaries. The
 * published manifest therefore has no scripts (no prepare/install hook runs on
 * a consumer's machine), no devDependencies, overrides or allowScripts, and
 * one optionalDependency per napi target, `arraypool-<platform>` at this
 * version: the map `napi prepublish` writes (napi-rs's convention; npm installs
 * the one whose os/cpu/libc match). The development manifest is kept in
 * package.dev.json while packing: a pack that dies between the two steps
 * (npm skips postpack when the pack fails) leaves it there; run
 * `node scripts/publish-manifest.mjs restore` (or the next `write`) to put
 * it back. `npm publish` of the directory is refused (`prepublishOnly`):
 * see `refuse-publish` below.
 */
import { copyFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const manifestPath = join(root, 'package.json');
const keptPath = join(root, 'package.dev.json');

/** napi-rs's platform name of a Rust target triple (the platform packages' suffix). */
export function platformOf(triple) {
  const match = /^(x86_64|aarch64)-unknown-linux-(gnu|musl)$/.exec(triple);
  if (!match) throw new Error(`no platform package name for the target ${triple}: add it to scripts/publish-manifest.mjs`);
  return `linux-${match[1] === 'x86_64' ? 'x64' : 'arm64'}-${match[2]}`;
}

/** The published manifest made from the development one. */
export function publishManifest(dev) {
  const { private: _private, scripts: _scripts, devDependencies: _dev, overrides: _overrides, allowScripts: _allow, ...kept } = dev;
  const optionalDependencies = Object.fromEntries(
    dev.napi.targets.map((triple) => [`${dev.name}-${platformOf(triple)}`, dev.version]),
  );
  return { ...kept, optionalDependencies };
}

function restore() {
  if (existsSync(keptPath)) renameSync(keptPath, manifestPath);
}

const invokedDirectly = process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1];
if (invokedDirectly) {
  const [command] = process.argv.slice(2);
  if (command === 'write') {
    restore(); // an interrupted pack's leftover
    // Renames, not writes: a process that reads package.json meanwhile (Node
    // does, to resolve the package's own imports) sees one whole file or the other.
    const dev = readFileSync(manifestPath, 'utf8');
    const scratch = `${manifestPath}.${process.pid}`;
    writeFileSync(scratch, `${JSON.stringify(publishManifest(JSON.parse(dev)), null, 2)}\n`);
    copyFileSync(manifestPath, keptPath);
    renameSync(scratch, manifestPath);
  } else if (command === 'restore') {
    restore();
  } else if (command === 'refuse-publish') {
    // `npm publish` of the directory packs (prepack/postpack swap the
    // manifest for the tarball) but then uploads the *development* manifest
    // it re-reads as the registry metadata: consumers would resolve no
    // platform package. Publish the packed tarballs instead (their manifest
    // has no scripts, so this hook does not run for them).
    console.error(
      'arraypool: do not `npm publish` the repository directory. Run `npm run package`, then publish the tarballs:\n' +
        '  npm publish target/package/tarballs/<each platform package>.tgz && npm publish target/package/tarballs/arraypool-<version>.tgz',
    );
    process.exit(1);
  } else {
    console.error('usage: node scripts/publish-manifest.mjs write | restore | refuse-publish');
    process.exit(2);
  }
}
