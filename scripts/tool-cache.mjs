/**
 * Where the project's scripts keep the tools they fetch themselves (Node
 * lines, cargo-zigbuild and zig, arm64 Node): $ARRAYPOOL_TOOL_CACHE, else
 * $XDG_CACHE_HOME/arraypool, else ~/.cache/arraypool. Never the work tree.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

export function toolCache() {
  if (process.env.ARRAYPOOL_TOOL_CACHE) return process.env.ARRAYPOOL_TOOL_CACHE;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'arraypool');
}
