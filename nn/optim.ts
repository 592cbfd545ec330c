// Optimizers over a parameter arena: each step gathers the gradients into the arena's gradient buffer (copies)
// and updates every parameter in one dispatch (LARS: three, for its per-tensor norms). The learning rate is
// passed per step, so schedules live outside (nn/schedule.ts).

import { Arena, type ArenaBuffer } from '../engine/arena.ts';
import { fmtShape, type Tensor } from '../engine/tensor.ts';
import { quietOnRelease } from '../engine/device.ts';
import type { TensorEntry } from '../engine/safetensors.ts';
import { arenaUpdate, segmentStats, type UpdateRule } from '../kernels/optim.ts';
import type { ReduceTuning } from '../kernels/reduce.ts';

/**
 * What an optimizer updates: an Arena, a materialized Module (nn/module.ts), or all of a materialized module's
 * parameters as `model.parameters()` gives them (PyTorch style; they live in one arena, updated as a whole).
 */
export type ArenaOwner = Arena | { arena: Arena | null } | readonly Tensor[];

function arenaOfParams(what: string, params: readonly Tensor[]): Arena {
  if (params.length === 0) throw new Error(`${what}: got an empty parameter list`);
  const arena = Arena.owning(params[0]);
  if (!arena) throw new Error(`${what}: tensor ${fmtShape(params[0].shape)} is not a parameter of a materialized module (optimizers update a model's arena: pass model.parameters() or the model)`);
  const given = new Set(params);
  if (params.some((p) => Arena.owning(p) !== arena)) throw new Error(`${what}: the parameters belong to different models; make one optimizer per model`);
  if (given.size !== arena.params.length || arena.params.some((p) => !given.has(p))) {
    throw new Error(`${what}: got ${given.size} of the ${arena.params.length} parameters of '${arena.label}'; an optimizer updates all of a model's parameters in one dispatch, so pass all of model.parameters() (freeze a part with noGrad or lr 0 instead)`);
  }
  return arena;
}

function arenaOf(what: string, x: ArenaOwner): Arena {
  if (Array.isArray(x)) return arenaOfParams(what, x);
  const a = x instanceof Arena ? x : (x as { arena: Arena | null })?.arena;
  if (!(a instanceof Arena)) throw new Error(`${what}: expected an Arena or a materialized Module (call materialize(model) first)`);
  a.assertLive(what);
  return a;
}

function checkRange(what: string, name: string, v: number, lo: number, hi: number, hiOpen = false): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || (hiOpen ? v >= hi : v > hi)) {
    throw new Error(`${what}: ${name} must be a finite number in [${lo}, ${hi}${hiOpen ? ')' : ']'}, got ${v}`);
  }
}


export abstract class Optimizer {
  readonly arena: Arena;
  /** The learning rate of the last step (or the constructor's). */
  lr: number;
  /** Number of updates applied so far (Adam's bias correction uses it). */
  steps = 0;
  protected readonly state: ArenaBuffer[];

  constructor(owner: ArenaOwner, readonly name: string, lr: number, private readonly stateNames: string[]) {
    this.arena = arenaOf(name, owner);
    checkRange(name, 'lr', lr, 0, Infinity);
    this.lr = lr;
    this.state = stateNames.map((n) => this.arena.createState(`${name}.${n}`));
  }

  /**
   * Applies one update from the parameters' `.grad` and consumes them: each is moved into the arena's gradient
   * buffer and disposed (`.grad` becomes null; a missing one counts as zero). So `backward(); step()` never
   * accumulates into the next step's gradients, with or without zeroGrad().
   */
  step(lr?: number): void {
    this.arena.gatherGrads();
    this.update(lr);
  }

  /**
   * Drops every parameter's `.grad` (and zeroes the gathered gradients), as PyTorch's `optimizer.zero_grad()`.
   * step() already consumes the gradients, so a loop needs this only to discard gradients without stepping, e.g.
   * after a backward() whose step is skipped; the PyTorch order `zeroGrad(); backward(); step()` works as is.
   */
  zeroGrad(): void {
    this.arena.zeroGrads();
  }

  /** Applies one update from the gradients already in the arena's gradient buffer. */
  update(lr = this.lr): void {
    this.arena.assertLive(`${this.name}.step`);
    checkRange(`${this.name}.step`, 'lr', lr, 0, Infinity);
    this.lr = lr;
    this.steps++;
    this.apply(lr);
  }

  protected abstract apply(lr: number): void;

  /** Optimizer state for checkpoints: `<state>.<parameter>` per state buffer and segment, and `step`. */
  stateDict(): Promise<Map<string, TensorEntry>> {
    return quietOnRelease(this.readState());
  }

  private async readState(): Promise<Map<string, TensorEntry>> {
    const out = new Map<string, TensorEntry>();
    out.set('step', { shape: [1], data: Float32Array.of(this.steps) });
    for (let k = 0; k < this.state.length; k++) {
      const packed = await this.state[k].read();
      for (const s of this.arena.segments) {
        out.set(`${this.stateNames[k]}.${s.name}`, { shape: [...s.shape], data: packed.slice(s.packedOffset, s.packedOffset + s.size) });
      }
    }
    return out;
  }

  /** Restores stateDict() output; every entry must be present with its shape, and nothing else. */
  loadStateDict(map: ReadonlyMap<string, TensorEntry>): void {
    const what = `${this.name}.loadStateDict`;
    const expected = new Set(['step']);
    for (const n of this.stateNames) for (const s of this.arena.segments) expected.add(`${n}.${s.name}`);
    const missing = [...expected].filter((k) => !map.has(k));
    const unexpected = [...map.keys()].filter((k) => !expected.has(k));
    if (missing.length || unexpected.length) {
      const parts = [missing.length ? `missing ${missing.join(', ')}` : '', unexpected.length ? `unexpected ${unexpected.join(', ')}` : ''];
      throw new Error(`${what}: ${parts.filter(Boolean).join('; ')}`);
    }
    const packed = this.stateNames.map((n) => {
      const out = new Float32Array(this.arena.numel);
      for (const s of this.arena.segments) {
        const e = map.get(`${n}.${s.name}`)!;
        if (e.data.length !== s.size || e.shape.length !== s.shape.length || e.shape.some((d, i) => d !== s.shape[i])) {
          throw new Error(`${what}: '${n}.${s.name}' has shape [${e.shape.join(', ')}] (${e.data.length} values), expected [${s.shape.join(', ')}]`);
        }
        out.set(e.data, s.packedOffset);
      }
      return out;
    });
    const step = map.get('step')!.data[0];
    if (!Number.isInteger(step) || step < 0) throw new Error(`${what}: step must be a non-negative integer, got ${step}`);
    packed.forEach((p, k) => this.state[k].write(p));
    this.steps = step;
  }

  /** Frees the state buffers (the arena belongs to the model). */
  dispose(): void {
    for (const s of this.state) s.destroy();
  }
}

export interface SGDOptions {
  lr: number;
  momentum?: number;
  weightDecay?: number;
  /** Leave bias and norm segments out of weight decay (PyTorch decays every parameter: false). */
  excludeBiasAndNorm?: boolean;
}

/** PyTorch SGD: u = g + wd·w; with momentum, buf = momentum·buf + u (buf starts at 0); w -= lr·buf. */
export class SGD extends Optimizer {
  readonly momentum: number;
  readonly weightDecay: number;
  readonly excludeBiasAndNorm: boolean;

  constructor(owner: ArenaOwner, o: SGDOptions) {
    const momentum = o.momentum ?? 0;
    checkRange('SGD', 'momentum', momentum, 0, 1, true);
    super(owner, 'SGD', o.lr, momentum > 0 ? ['momentum'] : []);
    checkRange('SGD', 'weightDecay', o.weightDecay ?? 0, 0, Infinity);
    this.momentum = momentum;
    this.weightDecay = o.weightDecay ?? 0;
    this.excludeBiasAndNorm = !!o.excludeBiasAndNorm;
  }

  protected apply(lr: number): void {
    const rule: UpdateRule = this.momentum > 0 ? 'momentum' : 'sgd';
    arenaUpdate(this.arena, rule, this.state, null, { lr, weightDecay: this.weightDecay, exclude: this.excludeBiasAndNorm, momentum: this.momentum });
  }
}

export interface AdamOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /** AdamW: decay the weights directly (w *= 1 - lr·wd) instead of adding wd·w to the gradient. */
  decoupled?: boolean;
  excludeBiasAndNorm?: boolean;
}

/** PyTorch Adam (or AdamW with decoupled: true), with bias correction. */
export class Adam extends Optimizer {
  readonly betas: [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  readonly decoupled: boolean;
  readonly excludeBiasAndNorm: boolean;

  constructor(owner: ArenaOwner, o: AdamOptions) {
    const [b1, b2] = o.betas ?? [0.9, 0.999];
    checkRange('Adam', 'betas[0]', b1, 0, 1, true);
    checkRange('Adam', 'betas[1]', b2, 0, 1, true);
    checkRange('Adam', 'eps', o.eps ?? 1e-8, 0, Infinity);
    if ((o.eps ?? 1e-8) === 0) throw new Error('Adam: eps must be > 0 (a zero gradient would divide 0 by 0)');
    checkRange('Adam', 'weightDecay', o.weightDecay ?? 0, 0, Infinity);
    super(owner, 'Adam', o.lr, ['exp_avg', 'exp_avg_sq']);
    this.betas = [b1, b2];
    this.eps = o.eps ?? 1e-8;
    this.weightDecay = o.weightDecay ?? 0;
    this.decoupled = !!o.decoupled;
    this.excludeBiasAndNorm = !!o.excludeBiasAndNorm;
  }

  protected apply(lr: number): void {
    const [b1, b2] = this.betas;
    arenaUpdate(this.arena, this.decoupled ? 'adamw' : 'adam', this.state, null, {
      lr, weightDecay: this.weightDecay, exclude: this.excludeBiasAndNorm, beta1: b1, beta2: b2, eps: this.eps,
      bc1: 1 - b1 ** this.steps, bc2: 1 - b2 ** this.steps,
    });
  }
}

export interface LARSOptions {
  lr: number;
  momentum?: number;
  weightDecay?: number;
  /** Trust coefficient. */
  eta?: number;
  /** workgroup size and tree of the norms' reduction, over the device's 'reduce' record (kernels/reduce.ts) */
  tuning?: Partial<ReduceTuning>;
}

/**
 * LARS exactly as BYOL's optax chain (byol/utils/optimizers.py): for weight segments u = g + wd·w, scaled by
 * eta·||w||/||u|| when both norms are positive; bias and norm segments get u = g (no decay, no trust ratio);
 * then mu = momentum·mu + u (mu starts at 0) and w -= lr·mu. Three dispatches: chunk partial norms,
 * per-segment ratios, the update.
 */
export class LARS extends Optimizer {
  readonly momentum: number;
  readonly weightDecay: number;
  readonly eta: number;
  private readonly tuning: Partial<ReduceTuning> | undefined;

  constructor(owner: ArenaOwner, o: LARSOptions) {
    checkRange('LARS', 'momentum', o.momentum ?? 0.9, 0, 1, true);
    checkRange('LARS', 'weightDecay', o.weightDecay ?? 0, 0, Infinity);
    checkRange('LARS', 'eta', o.eta ?? 1e-3, 0, Infinity);
    super(owner, 'LARS', o.lr, ['momentum']);
    this.momentum = o.momentum ?? 0.9;
    this.weightDecay = o.weightDecay ?? 0;
    this.eta = o.eta ?? 1e-3;
    this.tuning = o.tuning;
  }

  protected apply(lr: number): void {
    const stats = segmentStats(this.arena, this.arena.data, this.arena.grad, this.weightDecay, this.eta, { tuning: this.tuning });
    arenaUpdate(this.arena, 'lars', this.state, stats, { lr, weightDecay: this.weightDecay, exclude: true, momentum: this.momentum });
    stats.dispose();
  }
}

export interface SegmentNorm {
  name: string;
  kind: string;
  /** Frobenius norm of the parameter. */
  param: number;
  /** Frobenius norm of its gradient in the arena's gradient buffer (after gatherGrads()). */
  grad: number;
}

/** Per-parameter norms of weights and gathered gradients, for logging (one segmented reduction, one read). */
export async function segmentNorms(owner: ArenaOwner): Promise<SegmentNorm[]> {
  const arena = arenaOf('segmentNorms', owner);
  const stats = segmentStats(arena, arena.data, arena.grad, 0, 0);
  const v = (await stats.toArray()) as Float32Array;
  stats.dispose();
  return arena.segments.map((s, k) => ({ name: s.name, kind: s.kind, param: v[4 * k + 1], grad: v[4 * k + 2] }));
}
