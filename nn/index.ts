// Public API of the engine: `import { getDevice, tensor, matmul, backward, nn, optim } from 'byol-webgpu'`.
// Browser-safe: Node-only helpers (safetensors files on disk) are in byol/node.ts.
// the declarations use WebGPU's types (GPUDevice, ...): a consumer gets them through this reference
/// <reference types="@webgpu/types" preserve="true" />

export { getDevice, releaseDevice, gpu, onDeviceLost, deviceLostReason, DeviceLostError, simulateDeviceLoss, whenDeviceLost, type DeviceInfo, type GpuContext } from '../engine/device.ts';
export { setIdleWait } from '../engine/idle-wait.ts';
export { Tensor, Storage, tensor, variable, zeros, empty, tidy, tidyAsync, keep, shapeSize, fmtShape, inferDType, type DType, type Shape, type TypedArray, type ArrayOf, type TensorOptions } from '../engine/tensor.ts';
export { backward, noGrad, detach, clearTape, tapeLength, isGradEnabled, setTapeWarning } from '../engine/tape.ts';
// Tensor methods (x.add(y), x.matmul(w), loss.backward(), ...): installed on Tensor.prototype by this import
import '../kernels/methods.ts';
export { flush, sync, recorderStats, pool, setAutoFlush, setBindGroupReuse, recordDispatches, type RecordedDispatch } from '../engine/recorder.ts';
export { defineKernel, kernel, dumpWgslTo, type Kernel, type KernelDecl, type KernelArg, type UniformType, type BindingDecl, type Grid } from '../engine/kernel.ts';
export { NonFiniteMonitor, type HealthReport } from '../engine/health.ts';
export { liveTensors, memoryStats } from '../engine/memory.ts';

// ops
export { add, sub, mul, div, addRelu, relu, exp, log, sqrt, neg, addScalar, subScalar, mulScalar, divScalar, powScalar, reshape, full, onesLike, ew } from '../kernels/elementwise.ts';
export { sum, mean, max, reduceTuning, type ReduceTuning, type ReduceOptions } from '../kernels/reduce.ts';
export { matmul, matmulTuning, matmulTextureStats, tileName, type MatmulTuning, type MatmulOptions, type MatmulTile } from '../kernels/matmul.ts';
export { tuneMatmul, type TuneResult, type TuneOptions } from '../kernels/matmul-tune.ts';
export { tuneConv } from '../kernels/conv2d-tune.ts';
export { conv2d, type Conv2dOptions, type ConvEpilogue } from '../kernels/conv2d.ts';
export { batchNorm, type BatchNormStats, type BatchNormOptions } from '../kernels/batchnorm.ts';
export { batchNormConv2d } from '../kernels/batchnorm-conv.ts';
export { maxPool2d, globalAvgPool } from '../kernels/pool.ts';
export { softmaxCrossEntropy, crossEntropyRows, softmax, argmax } from '../kernels/softmax.ts';
export { cosineLoss, normalizedStd } from '../kernels/cosine.ts';
export { gather, gatherRows } from '../kernels/gather.ts';
export { concatRows, sliceRows, swapHalves } from '../kernels/rows.ts';

// modules, parameters, optimizers, checkpoints
export * as nn from './module.ts';
export * as optim from './optim.ts';
export { Module, Linear, ReLU, Sequential, Flatten, Identity, materialize, init, torchStateDict, loadTorchStateDict } from './module.ts';
export { Conv2d, BatchNorm, MaxPool2d, GlobalAvgPool, withBatchNormGroups } from './layers.ts';
export { Arena, arenaStats, type SegmentSpec } from '../engine/arena.ts';
export { SGD, Adam, LARS, type Optimizer, type ArenaOwner } from './optim.ts';
export { emaUpdate } from './ema.ts';
export { warmupCosine, emaTau } from './schedule.ts';
export { batches, Batches, type BatchesOptions } from './data.ts';
export { serializeSafetensors, parseSafetensors, type TensorEntry } from '../engine/safetensors.ts';
export { Rng, deriveSeed } from '../engine/random.ts';
