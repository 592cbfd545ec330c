// Waiting for the GPU without taking a CPU core from it. Dawn's Node binding (the `webgpu` package) settles a GPU
// promise (onSubmittedWorkDone, mapAsync, popErrorScope) by polling its events from a setImmediate callback that
// queues itself again for as long as any such promise is pending: the main thread spins at full speed while the
// GPU works. On a CPU adapter (lavapipe) the GPU's work runs on the same cores, so the spin takes a core from the
// shader threads. idleWhile() runs a second immediate loop beside Dawn's that sleeps the thread between its polls.
// Node only (Atomics.wait may not block a browser's main thread, and browsers do not spin).

import { isNode } from './node-module.ts';

/** The shortest nap (a wait's first) and the longest: a wait overshoots the GPU's finish by at most one nap. */
const MIN_NAP_MS = 0.05;
const MAX_NAP_MS = 2;
/** A nap is at most this fraction of the time waited so far, so short waits stay short. */
const NAP_FRACTION = 1 / 8;

let enabled = false;
let waiting = 0;
let looping = false;
let since = 0;
let generation = 0; // endIdleWaits() drops the waits of earlier generations
let cell: Int32Array | null = null;

/** Sleep between Dawn's polls while a GPU promise is pending (true), or let the binding spin (false). Node only. */
export function setIdleWait(on: boolean): void {
  enabled = on && isNode && typeof SharedArrayBuffer !== 'undefined';
  if (enabled && !cell) cell = new Int32Array(new SharedArrayBuffer(4));
}

/** Whether idle waiting is on, how many GPU promises it is waiting for, and whether its loop is queued (for tests). */
export function idleWaitState(): { enabled: boolean; waiting: number; looping: boolean } {
  return { enabled, waiting, looping };
}

function nap(): void {
  if (waiting === 0) {
    looping = false;
    return;
  }
  const ms = Math.min(MAX_NAP_MS, Math.max(MIN_NAP_MS, (performance.now() - since) * NAP_FRACTION));
  Atomics.wait(cell!, 0, 0, ms); // nobody notifies the cell: this is a sleep
  setImmediate(nap);
}

/** `p`, awaited with the thread asleep between Dawn's polls when idle waiting is on. */
export function idleWhile<T>(p: Promise<T>): Promise<T> {
  if (!enabled) return p;
  if (waiting++ === 0) since = performance.now();
  if (!looping) {
    looping = true;
    setImmediate(nap);
  }
  const mine = generation;
  const done = () => {
    if (mine === generation) waiting--;
  };
  p.then(done, done);
  return p;
}

/**
 * Stops waiting for every pending GPU promise: releaseDevice() and device loss call it, since Dawn may never settle
 * the promises of a destroyed device, and the nap loop would keep Node from exiting.
 */
export function endIdleWaits(): void {
  generation++;
  waiting = 0;
}
