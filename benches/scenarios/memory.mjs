/**
 * Scenario 5, memory: peak memory of parent and worker together while they
 * do scenario 1's round trip, for each competitor.
 *
 * Each competitor runs in a fresh process pair: the runner forks a "driver"
 * (the parent role, with a pool of its own) which forks its worker, reports
 * ready, and on request makes its input and does two round trips (full GC
 * between them). Meanwhile the runner samples both processes every few ms.
 *
 * What is counted, and why. RSS counts a shared page once in every process
 * that maps it, so RSS(parent) + RSS(worker) counts the pool twice. Instead,
 * per sample:
 *
 *   memory = Σ over the two processes (Pss − Pss_Shmem)     private memory
 *          + the pool's resident shmem (st_blocks × 512 of its memfd, through
 *            the driver's fd) and the run's /dev/shm files, shared memory once
 *
 * Pss (proportional set size, /proc/<pid>/smaps_rollup) already splits shared
 * pages between their users; its shmem part is replaced by the resident size
 * of the shared-memory files themselves, which counts every tmpfs page once,
 * including pages no process maps at that instant (a pool keeps freed blocks
 * resident for reuse; that is memory it holds). The figure reported is the
 * peak of that sum minus its value before the input was made (two idle Node
 * processes), against the bytes of input plus output. RSS peaks (VmHWM) and
 * the pool's resident size are reported alongside.
 */
import { readFileSync } from 'node:fs';

import { BenchChild, collectGarbage } from '../lib/children.mjs';
import { median } from '../lib/measure.mjs';
import { scenarioResult } from '../lib/results.mjs';
import { residentBytes, runnable, shmSegmentsOfThisRun } from '../lib/shm.mjs';
import { COMPETITORS, HeadlineContext } from './headline.mjs';

const SAMPLE_EVERY_MS = 2;
const MB = 1e6;

/** Selected fields of /proc/<pid>/smaps_rollup (or status), in bytes. */
function procFields(pid, file, names) {
  const text = readFileSync(`/proc/${pid}/${file}`, 'utf8');
  const values = {};
  for (const name of names) {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    values[name] = m ? Number(m[1]) * 1024 : 0;
  }
  return values;
}

class MemorySampler {
  /** @param {number[]} pids @param {string} poolName */
  constructor(pids, poolName) {
    this.pids = pids;
    this.poolName = poolName;
    this.peak = undefined;
    this.maxPoolResident = 0;
    this.timer = undefined;
  }

  sample() {
    let privateBytes = 0;
    for (const pid of this.pids) {
      const { Pss, Pss_Shmem } = procFields(pid, 'smaps_rollup', ['Pss', 'Pss_Shmem']);
      privateBytes += Pss - Pss_Shmem;
    }
    const poolResident = residentBytes(this.poolName);
    let sharedBytes = poolResident;
    for (const name of shmSegmentsOfThisRun()) sharedBytes += residentBytes(name);
    this.maxPoolResident = Math.max(this.maxPoolResident, poolResident);
    return { total: privateBytes + sharedBytes, privateBytes, sharedBytes };
  }

  start() {
    this.timer = setInterval(() => {
      try {
        const s = this.sample();
        if (!this.peak || s.total > this.peak.total) this.peak = s;
      } catch {
        // A process may be exiting; the next sample counts.
      }
    }, SAMPLE_EVERY_MS);
  }

  stop() {
    clearInterval(this.timer);
  }
}

/** Runs in the driver process: the competitor's input, then two round trips. */
export async function driveRounds({ competitor: id, length }, worker) {
  const competitor = COMPETITORS.find((c) => c.id === id);
  const ctx = new HeadlineContext(length, worker);
  await competitor.prepare?.(ctx);
  for (let r = 0; r < 2; r++) {
    await competitor.round(ctx);
    await collectGarbage();
    await worker.request({ op: 'gc' });
  }
  await competitor.dispose?.(ctx);
}

async function measureCompetitor(competitor, length, poolNames) {
  const env = { ...process.env, ARRAYPOOL_SIZE: '2G' };
  delete env.ARRAYPOOL_SEGMENT; // the driver makes a pool of its own
  const driver = new BenchChild('driver', { env });
  try {
    const { poolName, poolLocator, workerPid } = await driver.ready();
    poolNames.push(poolName);
    const sampler = new MemorySampler([driver.pid, workerPid], poolLocator);
    const idle = [];
    for (let i = 0; i < 5; i++) {
      idle.push(sampler.sample().total);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const baseline = median(idle);
    sampler.start();
    await driver.request({ op: 'drive', competitor: competitor.id, length });
    sampler.stop();
    const hwm = [driver.pid, workerPid].reduce((sum, pid) => sum + procFields(pid, 'status', ['VmHWM']).VmHWM, 0);
    const peak = sampler.peak ?? sampler.sample();
    return {
      id: competitor.id,
      label: competitor.label,
      value: (peak.total - baseline) / MB,
      extra: {
        peakTotalMB: peak.total / MB,
        idleBaselineMB: baseline / MB,
        privateAtPeakMB: peak.privateBytes / MB,
        sharedAtPeakMB: peak.sharedBytes / MB,
        poolResidentMaxMB: sampler.maxPoolResident / MB,
        rssPeakSumMB: hwm / MB,
      },
    };
  } finally {
    await driver.stop();
  }
}

export async function run({ length }, { poolNames }) {
  const dataMB = (2 * length * 8) / MB;
  const rows = [{ id: 'input-plus-output', label: `input + output (2 × ${dataMB / 2} MB)`, reference: true, value: dataMB }];
  for (const competitor of runnable(COMPETITORS)) rows.push(await measureCompetitor(competitor, length, poolNames));
  return scenarioResult(
    {
      id: 'memory',
      title: `5. peak memory of parent + worker in scenario 1 (${length.toExponential(0).replace('+', '')} float64)`,
      unit: 'MB',
      note: 'peak of Σ(Pss − Pss_Shmem) + /dev/shm resident bytes, above two idle processes; reference: bytes of input + output',
    },
    rows,
  );
}
