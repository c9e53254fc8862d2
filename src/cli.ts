#!/usr/bin/env node
/**
 * `npx arraypool ls | stats <name> | gc [--dry-run]`: this user's pools, from
 * outside (inspecting never joins a pool): anonymous (memfd) pools found
 * through /proc, and named segments in /dev/shm.
 */
import * as binding from '#binding';
import { ArrayPoolError, native } from './errors.js';

const USAGE = `usage: arraypool <command>
  ls               list pools (anonymous and /dev/shm): size, used, processes (alive/dead)
  stats <name>     one pool in detail
  gc [--dry-run]   remove /dev/shm segments whose processes are all dead (never one with a
                   live process); anonymous pools need none: the kernel frees them`;

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

function row(name: string, kind: string): string {
  try {
    const s = native(() => binding.inspectSegment(name));
    const alive = s.processes.filter((p) => p.alive).length;
    const state = s.problem ? `invalid: ${s.problem}` : s.anyAlive ? 'in use' : 'abandoned';
    return [name, kind, mib(s.sizeBytes), mib(s.usedBytes), s.liveBlocks, `${alive} alive / ${s.processes.length - alive} dead`, state].join('\t');
  } catch (error) {
    return `${name}\t${kind}\t(${error instanceof Error ? error.message : String(error)})`;
  }
}

function ls(): number {
  const anonymous = native(() => binding.listAnonymousPools());
  const named = native(() => binding.listSegments());
  if (anonymous.length + named.length === 0) {
    console.log('no arraypool pools: none held by a process of this user (anonymous), none in /dev/shm (named)');
    return 0;
  }
  console.log(['name', 'backing', 'size', 'used', 'blocks', 'processes', 'state'].join('\t'));
  for (const { name } of anonymous) console.log(row(name, 'memfd'));
  for (const name of named) console.log(row(name, 'shm'));
  return 0;
}

function stats(name: string | undefined): number {
  if (!name) {
    console.error(USAGE);
    return 2;
  }
  const s = native(() => binding.inspectSegment(name));
  console.log(JSON.stringify(s, null, 2));
  return 0;
}

function gc(dryRun: boolean): number {
  let removed = 0;
  for (const name of native(() => binding.listSegments())) {
    try {
      const s = native(() => binding.inspectSegment(name));
      if (s.anyAlive) continue;
      if (!dryRun && !native(() => binding.removeIfAbandoned(name))) continue;
      removed++;
      console.log(`${dryRun ? 'would remove' : 'removed'} ${name} (${mib(s.sizeBytes)}, ${s.processes.length} dead processes)`);
    } catch (error) {
      console.error(`${name}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  console.log(`${removed} segment(s) ${dryRun ? 'to remove' : 'removed'}`);
  const anonymous = native(() => binding.listAnonymousPools()).length;
  if (anonymous > 0) {
    console.log(`${anonymous} anonymous pool(s) in use: nothing to do, the kernel frees each with its last process`);
  }
  return 0;
}

function main(argv: string[]): number {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'ls':
        return ls();
      case 'stats':
        return stats(rest[0]);
      case 'gc':
        return gc(rest.includes('--dry-run'));
      default:
        console.error(USAGE);
        return command === undefined || command === '--help' || command === '-h' ? 0 : 2;
    }
  } catch (error) {
    if (error instanceof ArrayPoolError) {
      console.error(`arraypool: ${error.code}: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

process.exitCode = main(process.argv.slice(2));
