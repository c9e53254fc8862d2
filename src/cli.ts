#!/usr/bin/env node
/**
 * `npx arraypool ls | stats <name> | blocks <name> | gc [--dry-run] [name...]`: this user's
 * pools, from outside (inspecting never joins a pool, and never maps the
 * segment: the core reads its header with pread, so a file truncated under
 * us is a reported problem, not a SIGBUS): anonymous (memfd) pools found
 * through /proc, and named segments in /dev/shm.
 */
import * as binding from '#binding';
import { ArrayPoolError, native } from './errors.js';

const USAGE = `usage: arraypool <command>
  ls                         list pools (anonymous and /dev/shm): size, used, processes (alive/dead)
  stats <name>               one pool in detail
  blocks <name> [--json] [--limit N]
                             its used blocks (live and in flight): offset, size, holders,
                             transferred or not, age (allocations since); at most N (10000)
                             listed, the rest counted. Exit status 1 if the walk met a
                             problem (what was read before it is shown)
  gc [--dry-run] [name...]   remove /dev/shm pools whose processes are all dead (all of this
                             user's, or the names given); one line per segment says what was
                             done or, with --dry-run, what would be. Never a pool with a live
                             or joining process, a file that is not a pool, or one that is not
                             this user's alone (owner, mode). Anonymous pools need none: the
                             kernel frees them`;

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

/** `blocks <name>`: the pool's used blocks, read from outside (pread, no lock, no join). */
function blocks(args: string[]): number {
  let json = false;
  let limit: number | undefined;
  const names: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--json') json = true;
    else if (a === '--limit') {
      limit = Number(args[++i]);
      if (!Number.isSafeInteger(limit) || limit < 0) {
        console.error(`arraypool blocks: --limit takes a non-negative integer\n${USAGE}`);
        return 2;
      }
    } else if (a.startsWith('-')) {
      console.error(`arraypool blocks: unknown option ${a}\n${USAGE}`);
      return 2;
    } else names.push(a);
  }
  const name = names[0];
  if (name === undefined || names.length > 1) {
    console.error(USAGE);
    return 2;
  }
  const l = native(() => binding.inspectBlocks(name, limit));
  if (json) {
    console.log(JSON.stringify({ ...l, problem: l.problem ?? null }, null, 2));
  } else {
    const more = l.omitted > 0 ? `; ${l.omitted} more not listed (--limit)` : '';
    console.log(
      `${l.name}: ${l.totalBlocks} used block(s), ${mib(l.totalBytes)}, ${l.inFlightBlocks} in flight; next generation ${l.nextGeneration}${more}`,
    );
    if (l.blocks.length > 0) {
      console.log(['offset', 'size', 'data', 'generation', 'age', 'state', 'transfer', 'holders'].join('\t'));
    }
    for (const b of l.blocks) {
      const state = b.releasing ? 'releasing' : b.cached ? 'cached' : b.inFlight ? 'in flight' : 'held';
      const transfer = !b.transferRequired ? 'not required' : b.transferred ? 'transferred' : 'not transferred';
      const holders = b.holders.map((h) => `pid ${h.pid} (slot ${h.slot}${h.alive ? '' : ', dead'})`).join(', ') || '-';
      console.log([b.offset, b.size, b.dataLen, b.generation, b.age, state, transfer, holders].join('\t'));
    }
  }
  if (l.problem) {
    console.error(`arraypool blocks: ${l.name}: problem: ${l.problem}`);
    return 1;
  }
  return 0;
}

/** The line `gc` prints for one segment: what it did, or would do, and why. */
function gcLine(o: binding.GcEntry, dryRun: boolean): string {
  const size = o.sizeBytes > 0 ? `, ${mib(o.sizeBytes)}` : '';
  if (o.removable) {
    const verb = dryRun ? 'would remove' : o.removed ? 'removed' : 'could not remove';
    return `${verb} ${o.name} (${o.detail}${size})`;
  }
  switch (o.kind) {
    case 'not-a-pool':
      return `not a pool ${o.name} (${o.detail}): left alone`;
    case 'foreign':
      return `foreign owner or mode ${o.name} (${o.detail}): left alone`;
    case 'being-created':
      return `being created ${o.name} (${o.detail}): left alone`;
    case 'gone':
      return `gone ${o.name} (${o.detail})`;
    default: // 'in-use', 'joining', 'anonymous'
      return `keeps ${o.name} (${o.detail})`;
  }
}

function gc(args: string[]): number {
  const dryRun = args.includes('--dry-run');
  const unknown = args.filter((a) => a.startsWith('-') && a !== '--dry-run');
  if (unknown.length > 0) {
    console.error(`arraypool gc: unknown option ${unknown.join(' ')}\n${USAGE}`);
    return 2;
  }
  const given = args.filter((a) => !a.startsWith('-'));
  const names = given.length > 0 ? given : native(() => binding.listSegments());
  let removable = 0;
  let failed = 0;
  for (const name of names) {
    try {
      const o = native(() => binding.gcSegment(name, dryRun));
      console.log(gcLine(o, dryRun));
      if (dryRun ? o.removable : o.removed) removable++;
    } catch (error) {
      failed++;
      const why = error instanceof ArrayPoolError ? `${error.code}: ${error.message}` : String(error);
      console.error(`arraypool gc: ${name}: ${why}`);
    }
  }
  console.log(`${removable} segment(s) ${dryRun ? 'to remove' : 'removed'}`);
  if (given.length === 0) {
    const anonymous = native(() => binding.listAnonymousPools()).length;
    if (anonymous > 0) {
      console.log(`${anonymous} anonymous pool(s) in use: nothing to do, the kernel frees each with its last process`);
    }
  }
  return failed > 0 ? 1 : 0;
}

function main(argv: string[]): number {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'ls':
        return ls();
      case 'stats':
        return stats(rest[0]);
      case 'blocks':
        return blocks(rest);
      case 'gc':
        return gc(rest);
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
