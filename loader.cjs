'use strict';
// The native addon, as `#binding` (package.json "imports") for the ESM and the
// CommonJS builds alike. binding.cjs is napi-rs's generated loader: it takes
// NAPI_RS_NATIVE_LIBRARY_PATH when set (the test suite's testing addon), else a
// local `arraypool.<platform>.node` (a build from source), else the prebuilt
// package `arraypool-<platform>` (an optionalDependency). Its own error when
// none loads blames an npm bug; this one says which package is missing for
// this machine and how to build the addon from source instead.
const PREBUILT = ['linux-x64-gnu', 'linux-x64-musl', 'linux-arm64-gnu', 'linux-arm64-musl'];

/** napi-rs's name for this machine: `linux-x64-gnu`, `linux-arm64-musl`, `darwin-arm64`, ... */
function platformName() {
  if (process.platform !== 'linux') return `${process.platform}-${process.arch}`;
  let glibc = true;
  try {
    const report = process.report && process.report.getReport();
    glibc = Boolean(report && report.header && report.header.glibcVersionRuntime);
  } catch {
    // no report: assume glibc, the common case; the message names the package either way
  }
  return `${process.platform}-${process.arch}-${glibc ? 'gnu' : 'musl'}`;
}

function installed(pkg) {
  try {
    require.resolve(`${pkg}/package.json`);
    return true;
  } catch {
    return false;
  }
}

function missingAddon(cause) {
  const platform = platformName();
  const pkg = `arraypool-${platform}`;
  const fromSource =
    'To build it from source (needs Rust: cargo and rustc): in a clone of the arraypool repository run ' +
    '`npm install && npm run package -- --host`, then `npm install <clone>/target/package/tarballs/' +
    `${pkg}-<version>.tgz\` next to arraypool; or set NAPI_RS_NATIVE_LIBRARY_PATH to the ` +
    '`arraypool.*.node` that `npm install` built in the clone.';
  const why = installed(pkg)
    ? `${pkg} is installed but did not load (see the cause)`
    : PREBUILT.includes(platform)
    ? `the prebuilt package ${pkg} is not installed (npm installs it as an optional dependency of arraypool; ` +
      '`--omit=optional`, `--no-optional` or a lockfile made on another platform leave it out: reinstall without them)'
    : `there is no prebuilt addon for ${platform} (prebuilt: ${PREBUILT.join(', ')}; arraypool needs Linux)`;
  const error = new Error(`arraypool: cannot load its native addon for ${platform}: ${why}. ${fromSource}`);
  error.code = 'ERR_NATIVE_ADDON_MISSING';
  error.cause = cause;
  return error;
}

try {
  module.exports = require('./binding.cjs');
} catch (error) {
  throw missingAddon(error);
}
