/** The machine a run came from, for RESULTS.md and the JSON. */
import { readFileSync, statfsSync } from 'node:fs';
import os from 'node:os';

function readOr(path, fallback) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
}

export function describeMachine() {
  const cpuinfo = readOr('/proc/cpuinfo', '');
  const cpuModel = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  let devShmBytes = null;
  try {
    const fs = statfsSync('/dev/shm');
    devShmBytes = fs.blocks * fs.bsize;
  } catch {
    // No /dev/shm statfs: leave it out.
  }
  return {
    cpuModel,
    cores: os.availableParallelism(),
    memoryBytes: os.totalmem(),
    devShmBytes,
    // The file lists every mode with the active one in brackets: keep that one.
    shmemHugePages: /\[(\w+)\]/.exec(readOr('/sys/kernel/mm/transparent_hugepage/shmem_enabled', ''))?.[1] ?? 'unknown',
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
    loadAverageAtStart: os.loadavg().map((l) => Number(l.toFixed(2))),
  };
}
