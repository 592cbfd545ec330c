// Non-finite detection without a readback per step. Each check() records one dispatch that scans a tensor's
// bits and, if any element is NaN or ±Inf, bumps an atomic counter in a small flag buffer on the GPU; the
// first hit also stores the step counter and which check it was. poll() reads the flags: the only readback,
// done every N steps by the training loop. The step counter lives on the GPU too (nextStep() is one tiny
// dispatch), so the uniforms of the checks repeat every step and nothing is uploaded per step.

import { readRange } from './recorder.ts';
import { defineKernel } from './kernel.ts';
import { Tensor, zeros, keep, fmtShape } from './tensor.ts';

const WG = 256;

// flag buffer layout, in u32
const HITS = 0; // workgroups that saw a non-finite value (saturates), 0 = clean
const FIRST_STEP = 1;
const FIRST_CHECK = 2;
const STEP = 3;
const KINDS = 4; // bit 1: NaN, 2: +Inf, 4: -Inf, over every hit
const FLAG_WORDS = 8;
const MAX_CHECK_NAMES = 4096;

const FLAGS_WGSL = `
struct Flags { hits: atomic<u32>, firstStep: atomic<u32>, firstCheck: atomic<u32>, step: atomic<u32>, kinds: atomic<u32>,
  pad0: u32, pad1: u32, pad2: u32 }`;

// Reads the tensor as raw bits: an all-ones exponent is Inf (zero mantissa) or NaN, whatever fast-math
// assumptions the shader compiler makes about float comparisons.
const CHECK = defineKernel({
  name: 'nonFinite.check',
  uniforms: { n: 'u32', check: 'u32' },
  bindings: { x: 'read u32', f: { rw: 'Flags' } },
  workgroupSize: WG,
  header: `${FLAGS_WGSL}
var<workgroup> seen: atomic<u32>;`,
  body: `
  let i = gid.x + gid.y * (nwg.x * ${WG}u); // every invocation reaches the barrier: no early return
  if (i < p.n) {
    let b = x[i];
    if ((b & 0x7f800000u) == 0x7f800000u) {
      var kind = 1u;
      if ((b & 0x007fffffu) == 0u) { kind = select(2u, 4u, (b & 0x80000000u) != 0u); }
      atomicOr(&seen, kind);
    }
  }
  workgroupBarrier();
  if (li == 0u) {
    let k = atomicLoad(&seen);
    if (k != 0u) {
      atomicOr(&f.kinds, k);
      if (atomicLoad(&f.hits) < 0x40000000u) {
        // dispatches run in order, so the hit that finds the counter at zero is the first failing check
        if (atomicAdd(&f.hits, 1u) == 0u) {
          atomicStore(&f.firstStep, atomicLoad(&f.step));
          atomicStore(&f.firstCheck, p.check);
        }
      }
    }
  }`,
});

const NEXT_STEP = defineKernel({
  name: 'nonFinite.nextStep',
  bindings: { f: { rw: 'Flags' } },
  workgroupSize: 1,
  header: FLAGS_WGSL,
  body: '  atomicAdd(&f.step, 1u);',
});

const RESET = defineKernel({
  name: 'nonFinite.reset',
  uniforms: { step: 'u32' },
  bindings: { f: { rw: 'Flags' } },
  workgroupSize: 1,
  header: FLAGS_WGSL,
  body: `
  atomicStore(&f.hits, 0u); atomicStore(&f.firstStep, 0u); atomicStore(&f.firstCheck, 0u); atomicStore(&f.kinds, 0u);
  atomicStore(&f.step, p.step);`,
});

export type NonFiniteKind = 'NaN' | '+Inf' | '-Inf';

export interface HealthReport {
  /** No check since the last reset() saw a NaN or Inf. */
  ok: boolean;
  /** The step (nextStep() counter) of the first check that failed. */
  step?: number;
  /** The name given to that check. */
  what?: string;
  /** Every kind of non-finite value seen by any failing check. */
  kinds?: NonFiniteKind[];
}

export interface NonFiniteMonitorOptions {
  /** The step counter's starting value (e.g. the step a resumed run starts at). Default 0. */
  step?: number;
}

/**
 * Watches tensors for NaN/Inf on the GPU. In a training loop: check() what matters each step (the loss, the
 * gathered gradients, the parameters), nextStep() once per step, and `await poll()` every N steps.
 */
export class NonFiniteMonitor {
  private flags: Tensor;
  private names: string[] = [];
  private ids = new Map<string, number>();
  private _step: number;
  private _checks = 0;

  constructor(opts: NonFiniteMonitorOptions = {}) {
    this._step = checkStep(opts.step ?? 0, 'NonFiniteMonitor');
    this.flags = keep(zeros([FLAG_WORDS], 'u32'));
    if (this._step) this.reset(this._step);
  }

  /** The current step, as the GPU counter will have it once recorded work runs. */
  get step(): number {
    return this._step;
  }

  /** Check dispatches recorded since construction or the last reset(). */
  get checks(): number {
    return this._checks;
  }

  /**
   * Records one dispatch that flags `t` if any element is NaN or ±Inf. `what` names the check in reports; use
   * fixed labels ('loss', 'grads'), not per-step strings: the step is tracked separately.
   */
  check(t: Tensor, what: string): void {
    const op = 'NonFiniteMonitor.check';
    t.assertLive(op);
    if (t.dtype !== 'f32') throw new Error(`${op}('${what}'): expected an f32 tensor, got ${t.dtype} ${fmtShape(t.shape)}`);
    let id = this.ids.get(what);
    if (id === undefined) {
      if (this.names.length >= MAX_CHECK_NAMES) {
        throw new Error(`${op}: more than ${MAX_CHECK_NAMES} distinct check names ('${what}'); use fixed labels, the step is tracked by nextStep()`);
      }
      id = this.names.length;
      this.names.push(what);
      this.ids.set(what, id);
    }
    this._checks++;
    if (t.size === 0) return;
    CHECK.launch({ n: t.size, check: id, x: t, f: this.flags }, { threads: t.size });
  }

  /** Advances the step counter (one single-thread dispatch, in order with the checks). */
  nextStep(): void {
    NEXT_STEP.launch({ f: this.flags }, [1]);
    this._step++;
  }

  /** Reads the flags (one small readback; submits what was recorded). The flags stay set until reset(). */
  async poll(): Promise<HealthReport> {
    const op = 'NonFiniteMonitor.poll';
    const f = this.flags.binding(op);
    const w = new Uint32Array(await readRange(f, op));
    if (w[HITS] === 0) return { ok: true };
    const kinds: NonFiniteKind[] = [];
    if (w[KINDS] & 1) kinds.push('NaN');
    if (w[KINDS] & 2) kinds.push('+Inf');
    if (w[KINDS] & 4) kinds.push('-Inf');
    return { ok: false, step: w[FIRST_STEP], what: this.names[w[FIRST_CHECK]] ?? `check #${w[FIRST_CHECK]}`, kinds };
  }

  /** Clears the flags (in order with recorded work) and sets the step counter (default: keep counting). */
  reset(step = this._step): void {
    this._step = checkStep(step, 'NonFiniteMonitor.reset');
    this._checks = 0;
    RESET.launch({ step: this._step, f: this.flags }, [1]);
  }

  dispose(): void {
    this.flags.dispose();
  }
}

function checkStep(step: number, what: string): number {
  if (!Number.isInteger(step) || step < 0 || step > 0xffffffff) throw new Error(`${what}: step must be an integer in [0, 2^32), got ${step}`);
  return step;
}
