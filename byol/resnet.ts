// ResNet encoders (He et al. 2016, v1.5 as torchvision: stride on the 3x3 of a Bottleneck) with torchvision's
// parameter names, so checkpoints map one to one onto torchvision.models.resnet18/34/50. NHWC activations.
// Stems: 'imagenet' (7x7/2 conv, 3x3/2 max-pool), 'small' (3x3/1 conv, no pool) for 28-32 px images and 'small-s2'
// (3x3/2 conv, no pool: the stages at half the input's resolution, a quarter of the work).
// 'resnet-small' is the official BYOL code's TinyResNet shape: one BasicBlock per stage, for CPU-sized runs.

import { Module, Sequential, Linear } from '../nn/module.ts';
import { Conv2d, BatchNorm, MaxPool2d, GlobalAvgPool } from '../nn/layers.ts';
import { Tensor, fmtShape } from '../engine/tensor.ts';

export type ResNetArch = 'resnet18' | 'resnet34' | 'resnet50' | 'resnet-small';
export type ResNetStem = 'imagenet' | 'small' | 'small-s2';
export const RESNET_STEMS: readonly ResNetStem[] = ['small', 'small-s2', 'imagenet'];

export interface ResNetConfig {
  arch: ResNetArch;
  /**
   * 'imagenet': 7x7/2 conv + max-pool; 'small': 3x3/1 conv, no pool (CIFAR/Fashion-MNIST practice); 'small-s2':
   * 3x3/2 conv, no pool (the first stage at half the input's resolution).
   */
  stem?: ResNetStem;
  /** Channels of the first stage (64 in torchvision); later stages double it. */
  width?: number;
  inChannels?: number;
  /** >0 adds the final Linear `fc` (torchvision's classifier); 0 makes a pure encoder. */
  numClasses?: number;
  /** Zero-init the last BN gamma of each residual branch (Goyal et al.); off by default as in BYOL's paper runs. */
  zeroInitResidual?: boolean;
  /**
   * >0 adds a 1x1 conv + BN + ReLU to this many channels after the last stage (EfficientNet's and MobileNet's
   * "head" conv, timm's names conv_head / bn_head), so a narrow network still gives a wide representation. It
   * runs at the last stage's resolution, where it is cheap. 0 (default) is the plain ResNet.
   */
  headChannels?: number;
}

const BLOCKS: Record<ResNetArch, { block: 'basic' | 'bottleneck'; layers: number[] }> = {
  resnet18: { block: 'basic', layers: [2, 2, 2, 2] },
  resnet34: { block: 'basic', layers: [3, 4, 6, 3] },
  resnet50: { block: 'bottleneck', layers: [3, 4, 6, 3] },
  'resnet-small': { block: 'basic', layers: [1, 1, 1, 1] },
};

function downsample(cin: number, cout: number, stride: number): Sequential | null {
  if (stride === 1 && cin === cout) return null;
  return new Sequential(new Conv2d(cin, cout, 1, { stride }), new BatchNorm(cout));
}

export class BasicBlock extends Module {
  static readonly expansion = 1;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm;
  readonly downsample: Sequential | null;

  constructor(cin: number, planes: number, stride: number, zeroInit = false) {
    super();
    this.conv1 = this.child('conv1', new Conv2d(cin, planes, 3, { stride, padding: 1 }));
    this.bn1 = this.child('bn1', new BatchNorm(planes, { relu: true }));
    this.conv2 = this.child('conv2', new Conv2d(planes, planes, 3, { padding: 1 }));
    // bn2 ends the block: relu(bn2(h) + skip) in one pass
    this.bn2 = this.child('bn2', new BatchNorm(planes, { relu: true, gammaInit: zeroInit ? 0 : 1 }));
    const ds = downsample(cin, planes, stride);
    this.downsample = ds ? this.child('downsample', ds) : null;
  }

  forward(x: Tensor): Tensor {
    const h = this.bn1.forwardConv(this.conv2, this.conv1.forward(x));
    const skip = this.downsample ? this.downsample.forward(x) : x;
    return this.bn2.forward(h, skip);
  }
}

export class Bottleneck extends Module {
  static readonly expansion = 4;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm;
  readonly conv3: Conv2d;
  readonly bn3: BatchNorm;
  readonly downsample: Sequential | null;

  constructor(cin: number, planes: number, stride: number, zeroInit = false) {
    super();
    const out = planes * Bottleneck.expansion;
    this.conv1 = this.child('conv1', new Conv2d(cin, planes, 1));
    this.bn1 = this.child('bn1', new BatchNorm(planes, { relu: true }));
    this.conv2 = this.child('conv2', new Conv2d(planes, planes, 3, { stride, padding: 1 }));
    this.bn2 = this.child('bn2', new BatchNorm(planes, { relu: true }));
    this.conv3 = this.child('conv3', new Conv2d(planes, out, 1));
    this.bn3 = this.child('bn3', new BatchNorm(out, { relu: true, gammaInit: zeroInit ? 0 : 1 })); // relu(bn3(h) + skip)
    const ds = downsample(cin, out, stride);
    this.downsample = ds ? this.child('downsample', ds) : null;
  }

  forward(x: Tensor): Tensor {
    const h = this.bn2.forwardConv(this.conv3, this.bn1.forwardConv(this.conv2, this.conv1.forward(x)));
    const skip = this.downsample ? this.downsample.forward(x) : x;
    return this.bn3.forward(h, skip);
  }
}

export class ResNet extends Module {
  readonly config: Required<ResNetConfig>;
  /** Size of the representation (the global-average-pool output). */
  readonly featureDim: number;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm;
  readonly maxpool: MaxPool2d | null;
  readonly layers: Sequential[] = [];
  readonly convHead: Conv2d | null;
  readonly bnHead: BatchNorm | null;
  readonly avgpool = new GlobalAvgPool();
  readonly fc: Linear | null;

  constructor(config: ResNetConfig) {
    super();
    const c: Required<ResNetConfig> = { stem: 'imagenet', width: 64, inChannels: 3, numClasses: 0, zeroInitResidual: false, headChannels: 0, ...config };
    if (!RESNET_STEMS.includes(c.stem)) throw new Error(`ResNet: unknown stem '${c.stem}' (expected ${RESNET_STEMS.join(', ')})`);
    if (!BLOCKS[c.arch]) throw new Error(`ResNet: unknown arch '${c.arch}' (expected ${Object.keys(BLOCKS).join(', ')})`);
    if (!Number.isInteger(c.width) || c.width < 1) throw new Error(`ResNet: width must be a positive integer, got ${c.width}`);
    if (!Number.isInteger(c.headChannels) || c.headChannels < 0) throw new Error(`ResNet: headChannels must be a non-negative integer (0 = no head conv), got ${c.headChannels}`);
    this.config = c;
    const { block, layers } = BLOCKS[c.arch];
    const Block = block === 'basic' ? BasicBlock : Bottleneck;
    if (c.stem === 'imagenet') {
      this.conv1 = this.child('conv1', new Conv2d(c.inChannels, c.width, 7, { stride: 2, padding: 3 }));
      this.bn1 = this.child('bn1', new BatchNorm(c.width, { relu: true }));
      this.maxpool = new MaxPool2d(3, 2, 1);
    } else {
      this.conv1 = this.child('conv1', new Conv2d(c.inChannels, c.width, 3, { stride: c.stem === 'small-s2' ? 2 : 1, padding: 1 }));
      this.bn1 = this.child('bn1', new BatchNorm(c.width, { relu: true }));
      this.maxpool = null;
    }
    let cin = c.width;
    layers.forEach((n, i) => {
      const planes = c.width * 2 ** i;
      const blocks: Module[] = [];
      for (let b = 0; b < n; b++) {
        blocks.push(new Block(cin, planes, b === 0 && i > 0 ? 2 : 1, c.zeroInitResidual));
        cin = planes * Block.expansion;
      }
      this.layers.push(this.child(`layer${i + 1}`, new Sequential(...blocks)));
    });
    if (c.headChannels > 0) {
      this.convHead = this.child('conv_head', new Conv2d(cin, c.headChannels, 1));
      this.bnHead = this.child('bn_head', new BatchNorm(c.headChannels, { relu: true }));
      cin = c.headChannels;
    } else {
      this.convHead = null;
      this.bnHead = null;
    }
    this.featureDim = cin;
    this.fc = c.numClasses > 0 ? this.child('fc', new Linear(cin, c.numClasses)) : null;
  }

  /** Representation y: [N, H, W, C] images -> [N, featureDim] (then logits if the model has fc). */
  forward(x: Tensor): Tensor {
    const c = this.config;
    if (x.rank !== 4 || x.shape[3] !== c.inChannels) {
      throw new Error(`ResNet(${c.arch}): input ${fmtShape(x.shape)} must be NHWC [N, H, W, ${c.inChannels}]`);
    }
    const minSide = c.stem === 'imagenet' ? 32 : 8;
    if (x.shape[1] < minSide || x.shape[2] < minSide) {
      throw new Error(`ResNet(${c.arch}, ${c.stem} stem): input ${fmtShape(x.shape)} is too small; need at least ${minSide}x${minSide} pixels`);
    }
    let h = this.bn1.forward(this.conv1.forward(x));
    if (this.maxpool) h = this.maxpool.forward(h);
    for (const layer of this.layers) h = layer.forward(h);
    if (this.convHead && this.bnHead) h = this.bnHead.forward(this.convHead.forward(h));
    const y = this.avgpool.forward(h);
    return this.fc ? this.fc.forward(y) : y;
  }
}

