/**
 * Scenario 7, channel throughput: a producer streams `frames` frames of
 * 1 MiB (Float64Array(131072)) to a consumer, measured as frames per second
 * (= MiB/s) from the first frame sent to the last one acknowledged.
 *
 * Protocol, the same for every competitor: the producer writes the whole
 * frame (fillFrame) and sends `{ op: 'frame', seq, frame }`; the consumer
 * (lib/frame-consumer.mjs) reads the whole frame (sumFrame), lets go of it
 * and answers `{ op: 'ack', seq, sum }`, which the producer checks. At most
 * `window` frames are in flight (sent, not yet acknowledged), so producer
 * and consumer work at the same time on two cores, and what a channel holds
 * is bounded. Each competitor uses its channel the way it is meant to be:
 *
 * - worker_threads: the frame's buffer goes in the transfer list and comes
 *   back with the ack, so `window` buffers circulate (no copy, no allocation).
 * - child.send with advanced serialization: one heap frame, rewritten for
 *   each send (send serializes it at once); the consumer gets a copy.
 * - arraypool: each frame is a fresh pool block (`empty()`), sent with
 *   `send`, released by the producer once sent (it waits in flight for the
 *   consumer) and by the consumer after reading it (`onMessage`), so the
 *   block is free again before its ack leaves. The pool's peak use above
 *   the round's start is reported, and a round that ends with the pool
 *   fuller than it started fails (a leak, not a speed).
 */
import { empty, getPool, send } from '../../dist/index.js';
import { BenchChild } from '../lib/children.mjs';
import { FrameThread } from '../lib/frame-consumer.mjs';
import { FRAME_BYTES, FRAME_LENGTH, expectedSum, fillFrame } from '../lib/frames.mjs';
import { roundRobin } from '../lib/measure.mjs';
import { scenarioResult } from '../lib/results.mjs';

const MiB = 2 ** 20;

/** A forked consumer: `channel` is where frames go and acks come from. */
function childConsumer(mode) {
  const consumer = new BenchChild('frame-consumer', { args: [mode] });
  return { consumer, channel: consumer.process };
}

function threadConsumer(mode) {
  const consumer = new FrameThread(mode);
  return { consumer, channel: consumer.worker };
}

/** arraypool's way: a fresh block per frame, handed over by `send`. */
async function sendPoolFrame(state, seq) {
  const frame = empty('float64', FRAME_LENGTH);
  fillFrame(frame.array, seq);
  try {
    await send(state.channel, { op: 'frame', seq, frame });
    state.peakUsedBytes = Math.max(state.peakUsedBytes, getPool().stats().usedBytes);
  } finally {
    // Sent: the block waits in flight until the consumer attaches it (and
    // frees it with its own release). Not sent: this frees it.
    frame.release();
  }
}

export const COMPETITORS = [
  {
    id: 'worker-threads-transfer',
    label: 'worker_threads postMessage, frame in the transfer list (handed back with the ack)',
    reference: true,
    start: () => ({ ...threadConsumer('transfer'), spare: [] }),
    sendFrame(state, seq) {
      const frame = state.spare.pop() ?? new Float64Array(FRAME_LENGTH);
      fillFrame(frame, seq);
      state.channel.postMessage({ op: 'frame', seq, frame }, [frame.buffer]);
    },
    onAck(state, ack) {
      state.spare.push(ack.frame);
    },
  },
  {
    id: 'ipc-advanced',
    label: "child.send, serialization: 'advanced' (the frame is copied)",
    start: () => ({ ...childConsumer('clone'), frame: new Float64Array(FRAME_LENGTH) }),
    sendFrame(state, seq) {
      fillFrame(state.frame, seq);
      state.channel.send({ op: 'frame', seq, frame: state.frame });
    },
  },
  {
    id: 'arraypool-send-process',
    label: 'arraypool send/onMessage to a forked child (frame made in the pool)',
    usesPool: true,
    start: () => childConsumer('arraypool'),
    sendFrame: sendPoolFrame,
  },
  {
    id: 'arraypool-send-thread',
    label: 'arraypool send/onMessage to a worker thread (frame made in the pool)',
    usesPool: true,
    start: () => threadConsumer('arraypool'),
    sendFrame: sendPoolFrame,
  },
];

/**
 * One round: streams `frames` frames with at most `window` unacknowledged,
 * and resolves with frames per second. Acks must come in order with the
 * right sums; a consumer's error, crash or exit rejects.
 */
async function streamFrames(competitor, state, { frames, window }) {
  const { channel } = state;
  let acked = 0;
  let failure;
  let wake = () => {};
  const onMessage = (msg) => {
    try {
      if (msg?.op === 'error') throw new Error(`frame consumer: ${msg.message}`);
      if (msg?.op !== 'ack' || msg.seq !== acked) throw new Error(`expected the ack of frame ${acked}, got ${JSON.stringify(msg)}`);
      if (msg.sum !== expectedSum(msg.seq)) throw new Error(`frame ${msg.seq}: the consumer summed ${msg.sum}, expected ${expectedSum(msg.seq)}`);
      competitor.onAck?.(state, msg);
      acked++;
    } catch (error) {
      failure ??= error;
    }
    wake();
  };
  const onError = (error) => {
    failure ??= error;
    wake();
  };
  const onExit = (code, signal) => onError(new Error(`frame consumer exited (${signal ?? code})`));
  const until = async (condition) => {
    while (failure === undefined && !condition()) await new Promise((resolve) => (wake = resolve));
    if (failure !== undefined) throw failure;
  };
  channel.on('message', onMessage).on('error', onError).on('exit', onExit);
  try {
    const t0 = performance.now();
    for (let seq = 0; seq < frames; seq++) {
      await until(() => seq - acked < window);
      await competitor.sendFrame(state, seq);
    }
    await until(() => acked === frames);
    return frames / ((performance.now() - t0) / 1000);
  } finally {
    channel.off('message', onMessage).off('error', onError).off('exit', onExit);
  }
}

/** One round of a competitor, with the pool's bookkeeping for arraypool's. */
async function measuredRound(competitor, state, options) {
  if (!competitor.usesPool) return streamFrames(competitor, state, options);
  const before = getPool().stats().usedBytes;
  state.peakUsedBytes = before;
  const framesPerSecond = await streamFrames(competitor, state, options);
  const after = getPool().stats().usedBytes;
  if (after !== before) {
    throw new Error(`${competitor.id}: the pool holds ${after - before} more bytes after the round than before (frames not released)`);
  }
  state.maxPeakAboveStart = Math.max(state.maxPeakAboveStart ?? 0, state.peakUsedBytes - before);
  return framesPerSecond;
}

/** Scenario 7 in the runner: every competitor with its own consumer, rounds in turn. */
export async function run({ frames, window, rounds, warmup }) {
  const states = new Map();
  try {
    for (const c of COMPETITORS) states.set(c.id, c.start());
    // All listening before any 'ready' can arrive (a message with no listener is lost).
    await Promise.all([...states.values()].map((s) => s.consumer.ready()));
    const samples = await roundRobin(
      COMPETITORS.map((c) => ({ id: c.id, round: () => measuredRound(c, states.get(c.id), { frames, window }) })),
      { rounds, warmup, between: () => Promise.all([...states.values()].map((s) => s.consumer.request({ op: 'gc' }))) },
    );
    return scenarioResult(
      {
        id: 'channel-throughput',
        title: `7. stream ${frames} frames of 1 MiB (Float64Array(${FRAME_LENGTH})) to a consumer that reads each one, ${window} in flight`,
        unit: 'frames/s',
        better: 'higher',
        note: 'frames/s = MiB/s; producer writes each frame, consumer sums it and acknowledges; reference: worker_threads with the transfer list',
      },
      COMPETITORS.map((c) => {
        const peak = states.get(c.id).maxPeakAboveStart;
        return {
          id: c.id,
          label: c.label,
          reference: c.reference,
          samples: samples.get(c.id),
          ...(c.usesPool ? { extra: { poolPeakMiB: peak / MiB, poolPeakFrames: peak / FRAME_BYTES } } : {}),
        };
      }),
    );
  } finally {
    await Promise.all([...states.values()].map((s) => s.consumer.stop()));
  }
}
