/**
 * The forked side of every bench scenario: `node child.mjs <role> ...`.
 *
 * - `worker`: attaches to its parent's pool (the name arrives in
 *   ARRAYPOOL_SEGMENT) and answers requests — one reply per request — with
 *   the handlers below: scenario 1's round trips, scenario 4's echoes, and
 *   the timed loops of scenarios 3 and 6, which run here so that the
 *   process measured is a fresh one (3) or one of two (6).
 * - `driver`: scenario 5's parent role. It makes a pool of its own, forks a
 *   worker, and on request runs one scenario-1 competitor, while the runner
 *   samples the memory of both.
 * - `frame-consumer <mode>`: scenario 7's consumer (lib/frame-consumer.mjs),
 *   attached to its parent's pool like a worker.
 *
 * A child exits when its IPC channel closes (the runner ended or died), so
 * no bench process outlives the run.
 */
import { getPool, revive, startPool } from '../dist/index.js';
import { BenchChild, collectGarbage, stopAllChildren } from './lib/children.mjs';
import { consumeFrames } from './lib/frame-consumer.mjs';
import { allocationLoop } from './scenarios/contention.mjs';
import { workerHandlers as headlineHandlers } from './scenarios/headline.mjs';
import { driveRounds } from './scenarios/memory.mjs';
import { measureSmallArrays } from './scenarios/small-arrays.mjs';

const [role, frameMode] = process.argv.slice(2);

/**
 * op → handler(message) returning `{ reply, afterSend? }` (or a promise of
 * it). `afterSend` runs once the reply was written (e.g. releasing a block
 * whose handle it carried).
 */
const handlers = {
  ...headlineHandlers,
  echo: (msg) => ({ reply: msg }),
  'echo-handle'(msg) {
    const { x } = revive(msg);
    return { reply: { op: 'echo-handle', x }, afterSend: () => x.release() };
  },
  async gc() {
    await collectGarbage();
    return { reply: { op: 'gc' } };
  },
  async 'small-arrays'(params) {
    return { reply: { samples: await measureSmallArrays(params) } };
  },
  'alloc-loop': (params) => ({ reply: allocationLoop(params) }),
};

if (role === 'driver') {
  startPool(); // a fresh pool: the runner removed ARRAYPOOL_SEGMENT from our environment
  const worker = new BenchChild('worker');
  await worker.ready();
  handlers.drive = async (params) => {
    await driveRounds(params, worker);
    return { reply: { op: 'done' } };
  };
  listen();
  process.send({ op: 'ready', poolName: getPool().name, poolLocator: getPool().locator(), workerPid: worker.pid });
} else if (role === 'worker') {
  startPool();
  listen();
  process.send({ op: 'ready' });
} else if (role === 'frame-consumer') {
  startPool();
  consumeFrames(process, frameMode, (message) => process.send(message));
  exitOnDisconnect();
  process.send({ op: 'ready' });
} else {
  throw new Error(`bench child: unknown role ${JSON.stringify(role)}`);
}

function listen() {
  process.on('message', async (msg) => {
    try {
      const handler = handlers[msg.op];
      if (!handler) throw new Error(`unknown op ${JSON.stringify(msg.op)}`);
      const { reply, afterSend } = await handler(msg);
      process.send(reply, afterSend);
    } catch (error) {
      process.send({ op: 'error', message: error?.stack ?? String(error) });
    }
  });
  exitOnDisconnect();
}

function exitOnDisconnect() {
  process.on('disconnect', async () => {
    // The runner is done (or gone): stop our own children first, so their
    // exit hooks run too, then leave normally (arraypool's exit hook leaves
    // the pool; a creator unlinks its segment name).
    await stopAllChildren();
    process.exit(0);
  });
}
