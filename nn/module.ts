// Modules in two phases. Construction only declares: each module lists its parameters (name, shape, kind,
// init), its buffers (state that is not trained, e.g. BatchNorm running statistics) and its children.
// materialize(model, {seed}) then places every parameter of the tree in one Arena, initializes them with a
// seeded generator and uploads once, so optimizers and EMA run over the model in a few dispatches.
//
// A new layer is a class that declares in its constructor and computes in forward(), e.g. (with a conv op):
//   class Conv2d extends Module {
//     readonly weight: Parameter;
//     constructor(cin: number, cout: number, readonly k: number) {
//       super();
//       this.weight = this.param('weight', [k, k, cin, cout], 'weight', init.kaimingNormal(k * k * cin), 'conv');
//     }
//     forward(x: Tensor) { return conv2d(x, this.weight.value, ...); }
//   }

import { Tensor, tensor, keep, fmtShape, shapeSize } from '../engine/tensor.ts';
import { writeRange, flush } from '../engine/recorder.ts';
import { quietOnRelease } from '../engine/device.ts';
import { Arena, type Segment, type SegmentKind } from '../engine/arena.ts';
import { Rng, deriveSeed } from '../engine/random.ts';
import { add, relu, reshape } from '../kernels/elementwise.ts';
import { matmul } from '../kernels/matmul.ts';
import type { TensorEntry } from '../engine/safetensors.ts';

/** Initial values: normal(0, std), uniform(-bound, bound) or a constant. */
export type Init = { dist: 'normal'; std: number } | { dist: 'uniform'; bound: number } | { dist: 'const'; value: number };

export const init = {
  /** He et al.: normal with std = gain/sqrt(fanIn); gain √2 suits ReLU. fanIn = Cin·KH·KW for a conv. */
  kaimingNormal: (fanIn: number, gain = Math.SQRT2): Init => ({ dist: 'normal', std: gain / Math.sqrt(fanIn) }),
  normal: (std: number): Init => ({ dist: 'normal', std }),
  uniform: (bound: number): Init => ({ dist: 'uniform', bound }),
  zeros: (): Init => ({ dist: 'const', value: 0 }),
  ones: (): Init => ({ dist: 'const', value: 1 }),
  constant: (value: number): Init => ({ dist: 'const', value }),
};

/**
 * How a parameter's engine layout maps to PyTorch's, for checkpoints: 'linear' is [in, out] here and
 * [out, in] in PyTorch; 'conv' is HWIO [KH, KW, Cin, Cout] here and OIHW [Cout, Cin, KH, KW] in PyTorch.
 */
export type ParamLayout = 'plain' | 'linear' | 'conv';

export class Parameter {
  /** The view into the model's arena, set by materialize(). */
  tensor: Tensor | null = null;
  arena: Arena | null = null;
  segment: Segment | null = null;

  constructor(
    readonly name: string,
    readonly shape: readonly number[],
    readonly kind: SegmentKind,
    readonly init: Init,
    readonly layout: ParamLayout,
  ) {}

  /** The parameter tensor; throws before materialize(). */
  get value(): Tensor {
    if (!this.tensor) {
      const what = `parameter '${this.name}' ${fmtShape(this.shape)}`;
      throw new Error(`${what} is not materialized (or its model was disposed): call materialize(model, { seed }) first`);
    }
    return this.tensor;
  }
}

/** Non-trained state with its own storage (BatchNorm running mean/var), saved in stateDict. */
export class StateBuffer {
  tensor: Tensor | null = null;

  constructor(readonly name: string, readonly shape: readonly number[], readonly fill: number) {}

  get value(): Tensor {
    if (!this.tensor) throw new Error(`buffer '${this.name}' ${fmtShape(this.shape)} is not materialized: call materialize(model, { seed }) first`);
    return this.tensor;
  }

  /** Replaces the value with `t` (same shape), which then outlives any tidy(); the old tensor is disposed. */
  assign(t: Tensor): void {
    if (t.shape.length !== this.shape.length || t.shape.some((d, i) => d !== this.shape[i]) || t.dtype !== 'f32') {
      throw new Error(`buffer '${this.name}': cannot assign ${t.dtype} ${fmtShape(t.shape)}, expected f32 ${fmtShape(this.shape)}`);
    }
    if (t === this.tensor) return;
    keep(t);
    this.tensor?.dispose();
    this.tensor = t;
  }
}

export type StateDict = Map<string, TensorEntry>;

export interface LoadOptions {
  /** Require exactly the model's names (default true); false loads what matches and ignores the rest. */
  strict?: boolean;
}

const NAME = /^[A-Za-z0-9_]+$/;

function listNames(names: string[], max = 10): string {
  const shown = names.slice(0, max).map((n) => `'${n}'`).join(', ');
  return names.length > max ? `${shown} and ${names.length - max} more` : shown;
}

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

export abstract class Module {
  /** Training mode (batch statistics in BatchNorm); train()/eval() set it on the whole tree. */
  training = true;
  /** The arena holding every parameter of this tree, on the module materialize() was called on. */
  arena: Arena | null = null;
  private readonly _params = new Map<string, Parameter>();
  private readonly _buffers = new Map<string, StateBuffer>();
  private readonly _children = new Map<string, Module>();

  abstract forward(x: Tensor): Tensor;

  private claim(name: string): void {
    if (!NAME.test(name)) throw new Error(`${this.constructor.name}: invalid name '${name}' (letters, digits and _ only; dots separate levels)`);
    if (this._params.has(name) || this._buffers.has(name) || this._children.has(name)) {
      throw new Error(`${this.constructor.name}: '${name}' is already declared`);
    }
    if (this.isMaterialized()) throw new Error(`${this.constructor.name}: cannot declare '${name}' after materialize()`);
  }

  /** Declares a trained parameter. `kind` decides LARS adaptation and weight-decay exclusion. */
  protected param(name: string, shape: readonly number[], kind: SegmentKind, initial: Init, layout: ParamLayout = 'plain'): Parameter {
    this.claim(name);
    if (shape.some((d) => !Number.isInteger(d) || d <= 0)) {
      throw new Error(`${this.constructor.name}: parameter '${name}' has invalid shape ${fmtShape(shape)}`);
    }
    const p = new Parameter(name, [...shape], kind, initial, layout);
    this._params.set(name, p);
    return p;
  }

  /** Declares a buffer: not trained, not in the arena, filled with `fill` at materialize(), saved in stateDict. */
  protected buffer(name: string, shape: readonly number[], fill = 0): StateBuffer {
    this.claim(name);
    if (shape.some((d) => !Number.isInteger(d) || d < 0)) {
      throw new Error(`${this.constructor.name}: buffer '${name}' has invalid shape ${fmtShape(shape)}`);
    }
    const b = new StateBuffer(name, [...shape], fill);
    this._buffers.set(name, b);
    return b;
  }

  /** Registers a child module under `name`; returns it. */
  protected child<M extends Module>(name: string, m: M): M {
    this.claim(name);
    if (!(m instanceof Module)) throw new Error(`${this.constructor.name}: child '${name}' is not a Module`);
    this._children.set(name, m);
    return m;
  }

  namedChildren(): [string, Module][] {
    return [...this._children];
  }

  children(): Module[] {
    return [...this._children.values()];
  }

  /** This module and every descendant, depth first, with dotted names ('' for this one). */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [n, c] of this._children) out.push(...c.namedModules(prefix ? `${prefix}.${n}` : n));
    return out;
  }

  /** Declared parameters with dotted names: own first, then each child's, in declaration order (as PyTorch). */
  parameterSpecs(prefix = ''): [string, Parameter][] {
    const out: [string, Parameter][] = [];
    for (const [n, p] of this._params) out.push([prefix ? `${prefix}.${n}` : n, p]);
    for (const [n, c] of this._children) out.push(...c.parameterSpecs(prefix ? `${prefix}.${n}` : n));
    return out;
  }

  bufferSpecs(prefix = ''): [string, StateBuffer][] {
    const out: [string, StateBuffer][] = [];
    for (const [n, b] of this._buffers) out.push([prefix ? `${prefix}.${n}` : n, b]);
    for (const [n, c] of this._children) out.push(...c.bufferSpecs(prefix ? `${prefix}.${n}` : n));
    return out;
  }

  namedParameters(): [string, Tensor][] {
    return this.parameterSpecs().map(([n, p]) => [n, p.value]);
  }

  parameters(): Tensor[] {
    return this.parameterSpecs().map(([, p]) => p.value);
  }

  namedBuffers(): [string, Tensor][] {
    return this.bufferSpecs().map(([n, b]) => [n, b.value]);
  }

  buffers(): Tensor[] {
    return this.bufferSpecs().map(([, b]) => b.value);
  }

  /** Number of trained parameters (elements). */
  numParameters(): number {
    return this.parameterSpecs().reduce((s, [, p]) => s + shapeSize(p.shape), 0);
  }

  isMaterialized(): boolean {
    return this.parameterSpecs().some(([, p]) => p.tensor) || this.bufferSpecs().some(([, b]) => b.tensor);
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Parameters and buffers by dotted name, in the engine's layouts (Linear [in, out], conv HWIO). */
  stateDict(): Promise<StateDict> {
    return quietOnRelease(this.readState());
  }

  private async readState(): Promise<StateDict> {
    const out: StateDict = new Map();
    const packed = new Map<Arena, Float32Array>();
    for (const [name, p] of this.parameterSpecs()) {
      const t = p.value;
      const arena = p.arena!;
      let all = packed.get(arena);
      if (!all) packed.set(arena, (all = await arena.read()));
      const off = p.segment!.packedOffset;
      out.set(name, { shape: [...t.shape], data: all.slice(off, off + t.size) });
    }
    for (const [name, b] of this.bufferSpecs()) {
      const t = b.value;
      out.set(name, { shape: [...t.shape], data: (await t.toArray()) as Float32Array });
    }
    return out;
  }

  /**
   * Loads parameters and buffers by name. Everything is checked before anything is written: with strict
   * (default) missing and unexpected names are errors; a shape mismatch always is.
   */
  loadStateDict(state: ReadonlyMap<string, TensorEntry>, opts: LoadOptions = {}): void {
    const what = `${this.constructor.name}.loadStateDict`;
    const strict = opts.strict ?? true;
    const params = this.parameterSpecs();
    const buffers = this.bufferSpecs();
    for (const [, p] of params) void p.value; // throws if not materialized
    for (const [, b] of buffers) void b.value;
    const expected = new Map<string, readonly number[]>();
    for (const [n, x] of [...params, ...buffers]) expected.set(n, x.shape);
    const problems: string[] = [];
    if (strict) {
      const missing = [...expected.keys()].filter((n) => !state.has(n));
      const unexpected = [...state.keys()].filter((n) => !expected.has(n));
      if (missing.length) problems.push(`missing ${missing.length} entr${missing.length > 1 ? 'ies' : 'y'}: ${listNames(missing)}`);
      if (unexpected.length) problems.push(`unexpected ${unexpected.length} entr${unexpected.length > 1 ? 'ies' : 'y'}: ${listNames(unexpected)}`);
    }
    const layouts = new Map(params.map(([n, p]) => [n, p.layout]));
    for (const [n, shape] of expected) {
      const e = state.get(n);
      if (!e) continue;
      if (!sameShape(e.shape, shape)) {
        const layout = layouts.get(n);
        const torchLike = layout && layout !== 'plain' && sameShape(e.shape, torchShape(shape, layout));
        const hint = torchLike ? ' (this is the PyTorch layout: use loadTorchStateDict)' : '';
        problems.push(`'${n}' has shape ${fmtShape(e.shape)} in the checkpoint but ${fmtShape(shape)} in the model${hint}`);
      } else if (!(e.data instanceof Float32Array) || e.data.length !== shapeSize(shape)) {
        problems.push(`'${n}' has ${e.data?.length} values for shape ${fmtShape(shape)}`);
      }
    }
    if (problems.length) throw new Error(`${what}: ${problems.join('; ')}`);

    // one write per arena when this module covers it completely, else one per parameter
    const byArena = new Map<Arena, [Segment, Float32Array][]>();
    for (const [n, p] of params) {
      const e = state.get(n);
      if (!e) continue;
      let list = byArena.get(p.arena!);
      if (!list) byArena.set(p.arena!, (list = []));
      list.push([p.segment!, e.data]);
    }
    for (const [arena, list] of byArena) {
      if (list.length === arena.segments.length) {
        const packed = new Float32Array(arena.numel);
        for (const [s, d] of list) packed.set(d, s.packedOffset);
        arena.write(packed);
      } else for (const [s, d] of list) arena.data.writeSegment(s, d);
    }
    flush();
    for (const [n, b] of buffers) {
      const e = state.get(n);
      if (e && e.data.length) writeRange(b.value.binding(what), e.data);
    }
  }

  /**
   * Frees the arena (when this module owns it) and every buffer of the tree. The module can then be
   * materialized again (e.g. on a new device after device loss) and reloaded with loadStateDict().
   */
  dispose(): void {
    if (this.arena) {
      for (const [, p] of this.parameterSpecs()) {
        if (p.arena === this.arena) (p.tensor = null), (p.arena = null), (p.segment = null);
      }
      this.arena.dispose();
    }
    this.arena = null;
    for (const [, b] of this.bufferSpecs()) {
      b.tensor?.dispose();
      b.tensor = null;
    }
  }
}

export interface MaterializeOptions {
  /** Seed of the initialization; each parameter draws from a stream derived from the seed and its name. */
  seed?: number;
  label?: string;
}

/** The initial values of one parameter (deterministic in seed and name). */
export function initialValues(p: Parameter, name: string, seed: number): Float32Array {
  const n = shapeSize(p.shape);
  const out = new Float32Array(n);
  const r = new Rng(deriveSeed(seed, name));
  const d = p.init;
  if (d.dist === 'const') out.fill(d.value);
  else if (d.dist === 'normal') for (let i = 0; i < n; i++) out[i] = d.std * r.normal();
  else for (let i = 0; i < n; i++) out[i] = r.uniform(-d.bound, d.bound);
  return out;
}

/**
 * Places every parameter of `model` in one new Arena (model.arena), initializes them (one upload) and creates
 * the buffers. Returns the model.
 */
export function materialize<M extends Module>(model: M, opts: MaterializeOptions = {}): M {
  const seed = opts.seed ?? 0;
  if (model.isMaterialized()) throw new Error(`materialize: ${model.constructor.name} (or a part of it) is already materialized`);
  const params = model.parameterSpecs();
  if (params.length) {
    const arena = new Arena(params.map(([name, p]) => ({ name, shape: p.shape, kind: p.kind })), opts.label ?? model.constructor.name);
    const packed = new Float32Array(arena.numel);
    params.forEach(([name, p], k) => {
      packed.set(initialValues(p, name, seed), arena.segments[k].packedOffset);
      p.tensor = arena.params[k];
      p.arena = arena;
      p.segment = arena.segments[k];
    });
    arena.write(packed);
    model.arena = arena;
  }
  for (const [, b] of model.bufferSpecs()) b.tensor = keep(tensor(new Float32Array(shapeSize(b.shape)).fill(b.fill), b.shape));
  return model;
}

// ---- PyTorch layouts ------------------------------------------------------------------------------------

function torchShape(shape: readonly number[], layout: ParamLayout): number[] {
  if (layout === 'linear') return [shape[1], shape[0]];
  if (layout === 'conv') return [shape[3], shape[2], shape[0], shape[1]];
  return [...shape];
}

/** Engine layout → PyTorch layout ([in, out] → [out, in]; HWIO → OIHW). */
export function toTorchLayout(e: TensorEntry, layout: ParamLayout): TensorEntry {
  if (layout === 'plain') return { shape: [...e.shape], data: e.data.slice() };
  const out = new Float32Array(e.data.length);
  if (layout === 'linear') {
    const [I, O] = e.shape;
    for (let i = 0; i < I; i++) for (let o = 0; o < O; o++) out[o * I + i] = e.data[i * O + o];
  } else {
    const [KH, KW, C, O] = e.shape;
    for (let h = 0; h < KH; h++) for (let w = 0; w < KW; w++) for (let c = 0; c < C; c++) for (let o = 0; o < O; o++) {
      out[((o * C + c) * KH + h) * KW + w] = e.data[((h * KW + w) * C + c) * O + o];
    }
  }
  return { shape: torchShape(e.shape, layout), data: out };
}

/** PyTorch layout → engine layout ([out, in] → [in, out]; OIHW → HWIO). */
export function fromTorchLayout(e: TensorEntry, layout: ParamLayout): TensorEntry {
  if (layout === 'plain') return { shape: [...e.shape], data: e.data.slice() };
  const out = new Float32Array(e.data.length);
  if (layout === 'linear') {
    const [O, I] = e.shape;
    for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) out[i * O + o] = e.data[o * I + i];
    return { shape: [I, O], data: out };
  }
  const [O, C, KH, KW] = e.shape;
  for (let o = 0; o < O; o++) for (let c = 0; c < C; c++) for (let h = 0; h < KH; h++) for (let w = 0; w < KW; w++) {
    out[((h * KW + w) * C + c) * O + o] = e.data[((o * C + c) * KH + h) * KW + w];
  }
  return { shape: [KH, KW, C, O], data: out };
}

/** stateDict() converted to PyTorch's layouts, ready for a safetensors file that torch can load. */
export async function torchStateDict(model: Module): Promise<StateDict> {
  const layouts = new Map(model.parameterSpecs().map(([n, p]) => [n, p.layout]));
  const out: StateDict = new Map();
  for (const [n, e] of await model.stateDict()) out.set(n, toTorchLayout(e, layouts.get(n) ?? 'plain'));
  return out;
}

/** loadStateDict() from PyTorch's layouts. Entries with the wrong rank for their layout are reported. */
export function loadTorchStateDict(model: Module, state: ReadonlyMap<string, TensorEntry>, opts: LoadOptions = {}): void {
  const specs = new Map(model.parameterSpecs());
  const converted: StateDict = new Map();
  for (const [n, e] of state) {
    const p = specs.get(n);
    const layout = p?.layout ?? 'plain';
    // checked here, in PyTorch's layout, so the message shows the shapes the checkpoint's author knows
    if (p && layout !== 'plain' && !sameShape(e.shape, torchShape(p.shape, layout))) {
      const want = fmtShape(torchShape(p.shape, layout));
      throw new Error(`loadTorchStateDict: '${n}' has shape ${fmtShape(e.shape)} in the checkpoint but ${want} in PyTorch layout`);
    }
    converted.set(n, fromTorchLayout(e, layout));
  }
  model.loadStateDict(converted, opts);
}

// ---- layers ---------------------------------------------------------------------------------------------

export interface LinearOptions {
  bias?: boolean;
  /** PyTorch's default 'uniform' (±1/√in) or 'zeros'. */
  biasInit?: 'uniform' | 'zeros';
}

/** y = x·W + b with W stored [in, out] (no transpose in forward; checkpoints convert to PyTorch's [out, in]). */
export class Linear extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: LinearOptions = {}) {
    super();
    if (!Number.isInteger(inFeatures) || inFeatures <= 0 || !Number.isInteger(outFeatures) || outFeatures <= 0) {
      throw new Error(`Linear: features must be positive integers, got in=${inFeatures} out=${outFeatures}`);
    }
    this.weight = this.param('weight', [inFeatures, outFeatures], 'weight', init.kaimingNormal(inFeatures), 'linear');
    const biasInit = opts.biasInit === 'zeros' ? init.zeros() : init.uniform(1 / Math.sqrt(inFeatures));
    this.bias = opts.bias === false ? null : this.param('bias', [outFeatures], 'bias', biasInit);
  }

  forward(x: Tensor): Tensor {
    if (x.rank < 2 || x.rank > 3 || x.shape[x.rank - 1] !== this.inFeatures) {
      const i = this.inFeatures;
      throw new Error(`Linear(${i}→${this.outFeatures}): input ${fmtShape(x.shape)} must be [N, ${i}] or [B, N, ${i}]`);
    }
    const y = matmul(x, this.weight.value);
    if (!this.bias) return y;
    const out = add(y, this.bias.value);
    y.dispose(); // the tape holds what backward needs
    return out;
  }
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

/** Returns its input (the same tensor, as PyTorch's nn.Identity). */
export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

/** [N, ...] → [N, prod(...)], a view. */
export class Flatten extends Module {
  forward(x: Tensor): Tensor {
    if (x.rank < 1) throw new Error(`Flatten: input ${fmtShape(x.shape)} needs a batch dimension`);
    return reshape(x, [x.shape[0], shapeSize(x.shape.slice(1))]);
  }
}

/** Children named '0', '1', ... applied in order. */
export class Sequential extends Module {
  readonly layers: readonly Module[];

  constructor(...layers: Module[]) {
    super();
    this.layers = layers.map((m, i) => this.child(String(i), m));
  }

  forward(x: Tensor): Tensor {
    let y = x;
    for (const m of this.layers) {
      const next = m.forward(y);
      if (y !== x && next !== y) y.dispose(); // intermediates: the tape keeps what backward needs
      y = next;
    }
    return y;
  }
}
