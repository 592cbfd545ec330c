// Convolutional-network layers on top of nn/module.ts: Conv2d, BatchNorm (1d and 2d: channels are the last axis),
// MaxPool2d and GlobalAvgPool. Parameters follow PyTorch's names so state dicts map onto torchvision's.

import { Module, Parameter, StateBuffer, init } from './module.ts';
import { Tensor, fmtShape } from '../engine/tensor.ts';
import { conv2d, type Conv2dOptions } from '../kernels/conv2d.ts';
import { batchNorm, type BatchNormOptions, type BatchNormStats } from '../kernels/batchnorm.ts';
import { batchNormConv2d } from '../kernels/batchnorm-conv.ts';
import { maxPool2d, globalAvgPool } from '../kernels/pool.ts';

export interface Conv2dLayerOptions {
  stride?: number;
  padding?: number;
  bias?: boolean;
  /**
   * In training mode, write the output's per-channel moments in the conv's epilogue (conv2d's `moments`), so that
   * a BatchNorm reading the output skips its statistics pass. Default true; turn off for a conv whose output no
   * BatchNorm reads (the moments would be written for nothing).
   */
  moments?: boolean;
}

/**
 * NHWC convolution with an HWIO weight, initialized Kaiming-normal with fan_in = Cin·k·k and the ReLU gain
 * (std √(2/fan_in)). torchvision's ResNet differs: it uses mode='fan_out' (fan_out = Cout·k·k), so where Cout ≠ Cin
 * the engine's initial weights have another scale (e.g. √2 larger in a conv that doubles the channels). Trained
 * results and checkpoints are unaffected; only the starting point is not torchvision's.
 */
export class Conv2d extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | null;
  readonly stride: number;
  readonly padding: number;
  /** See Conv2dLayerOptions.moments; may be changed at any time (benchmarks compare both). */
  moments: boolean;

  constructor(readonly inChannels: number, readonly outChannels: number, readonly kernelSize: number, opts: Conv2dLayerOptions = {}) {
    super();
    for (const [k, v] of [['inChannels', inChannels], ['outChannels', outChannels], ['kernelSize', kernelSize]] as const) {
      if (!Number.isInteger(v) || v <= 0) throw new Error(`Conv2d: ${k} must be a positive integer, got ${v}`);
    }
    this.stride = opts.stride ?? 1;
    this.padding = opts.padding ?? 0;
    this.moments = opts.moments ?? true;
    const fanIn = kernelSize * kernelSize * inChannels;
    this.weight = this.param('weight', [kernelSize, kernelSize, inChannels, outChannels], 'weight', init.kaimingNormal(fanIn), 'conv');
    this.bias = opts.bias ? this.param('bias', [outChannels], 'bias', init.uniform(1 / Math.sqrt(fanIn))) : null;
  }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight.value, this.bias?.value ?? null, this.options());
  }

  /** conv2d's options for this layer's forward. */
  options(): Conv2dOptions {
    return { stride: this.stride, padding: this.padding, moments: this.training && this.moments };
  }
}

export interface BatchNormLayerOptions {
  momentum?: number;
  eps?: number;
  /** Fuse the ReLU that follows (one pass instead of two). */
  relu?: boolean;
  /** Initial gamma (1, or 0 for the zero-init-residual variant). */
  gammaInit?: number;
}

/** Batch normalization over the last axis: [N, C] (1d) or [N, H, W, C] (2d). */
export class BatchNorm extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter;
  readonly runningMean: StateBuffer;
  readonly runningVar: StateBuffer;
  readonly momentum: number;
  readonly eps: number;
  readonly relu: boolean;
  /** Training forwards seen, as PyTorch's num_batches_tracked (kept on the CPU; exported with checkpoints). */
  numBatchesTracked = 0;
  /** Batches in one training forward, each with its own statistics (set by withBatchNormGroups). */
  groups = 1;
  /**
   * forwardConv's fused op (kernels/batchnorm-conv.ts: the conv's dx writes this layer's backward sums); false
   * runs the two layers one after the other. May be changed at any time (benchmarks compare both).
   */
  fuseConv = true;

  constructor(readonly numFeatures: number, opts: BatchNormLayerOptions = {}) {
    super();
    if (!Number.isInteger(numFeatures) || numFeatures <= 0) throw new Error(`BatchNorm: numFeatures must be a positive integer, got ${numFeatures}`);
    this.weight = this.param('weight', [numFeatures], 'norm', init.constant(opts.gammaInit ?? 1));
    this.bias = this.param('bias', [numFeatures], 'norm', init.zeros());
    this.runningMean = this.buffer('running_mean', [numFeatures], 0);
    this.runningVar = this.buffer('running_var', [numFeatures], 1);
    this.momentum = opts.momentum ?? 0.1;
    this.eps = opts.eps ?? 1e-5;
    this.relu = !!opts.relu;
  }

  /**
   * bn(x), then the ReLU if the layer has one; with `residual` (a tensor of x's shape), relu(bn(x) + residual) in
   * one pass: the end of a residual block.
   */
  forward(x: Tensor, residual?: Tensor): Tensor {
    if (x.shape[x.rank - 1] !== this.numFeatures) {
      throw new Error(`BatchNorm(${this.numFeatures}): input ${fmtShape(x.shape)} has ${x.shape[x.rank - 1]} channels in its last axis, expected ${this.numFeatures}`);
    }
    if (this.training) this.numBatchesTracked += this.groups;
    return batchNorm(x, this.weight.value, this.bias.value, this.stats(), this.options(residual));
  }

  /**
   * conv.forward(this.forward(x)) for a conv that is the only reader of this layer's output (a residual block's
   * first batchNorm and second conv). In training it is one op (batchNormConv2d) whose backward takes this
   * layer's sums from the conv's dx instead of a pass over x and dy; the values are the composition's.
   */
  forwardConv(conv: Conv2d, x: Tensor): Tensor {
    if (!this.fuseConv || !this.training) return conv.forward(this.forward(x));
    if (x.shape[x.rank - 1] !== this.numFeatures) return conv.forward(this.forward(x)); // forward() names the mismatch
    this.numBatchesTracked += this.groups;
    return batchNormConv2d(
      x, this.weight.value, this.bias.value, this.stats(), this.options(),
      conv.weight.value, conv.bias?.value ?? null, conv.options(),
    );
  }

  private stats(): BatchNormStats {
    return { runningMean: this.runningMean.value, runningVar: this.runningVar.value };
  }

  private options(residual?: Tensor): BatchNormOptions {
    return {
      training: this.training,
      momentum: this.momentum,
      eps: this.eps,
      relu: this.relu,
      groups: this.groups,
      ...(residual ? { residual } : {}),
    };
  }
}

/**
 * Runs fn with every BatchNorm of root taking its training statistics per 1/groups of the batch, as if the
 * network ran on each part alone: a BYOL step runs its two views as one batch of 2B this way, so each conv and
 * matmul runs once over both views. Per-sample layers (conv, pooling, linear, ReLU) need nothing. Restores the
 * previous setting after fn, also when it throws.
 */
export function withBatchNormGroups<T>(root: Module, groups: number, fn: () => T): T {
  if (!Number.isInteger(groups) || groups < 1) throw new Error(`withBatchNormGroups: groups must be a positive integer, got ${groups}`);
  const norms = [...root.namedModules()].map(([, m]) => m).filter((m): m is BatchNorm => m instanceof BatchNorm);
  const prev = norms.map((m) => m.groups);
  for (const m of norms) m.groups = groups;
  try {
    return fn();
  } finally {
    norms.forEach((m, i) => (m.groups = prev[i]));
  }
}

export class MaxPool2d extends Module {
  constructor(readonly kernel = 3, readonly stride = 2, readonly padding = 1) {
    super();
  }
  forward(x: Tensor): Tensor {
    return maxPool2d(x, { kernel: this.kernel, stride: this.stride, padding: this.padding });
  }
}

/** [N, H, W, C] -> [N, C]. */
export class GlobalAvgPool extends Module {
  forward(x: Tensor): Tensor {
    return globalAvgPool(x);
  }
}
