// Public API of the engine: `import { getDevice, tensor, matmul, backward } from 'byol-webgpu'`.

export { getDevice, releaseDevice, gpu, onDeviceLost, deviceLostReason, type DeviceInfo, type GpuContext } from './device.ts';
export { Tensor, Storage, tensor, variable, zeros, empty, tidy, tidyAsync, keep, shapeSize, fmtShape, type DType, type Shape } from './tensor.ts';
export { backward, noGrad, detach, clearTape, tapeLength, isGradEnabled } from './tape.ts';
export { flush, sync, recorderStats, pool } from './recorder.ts';
export { add, sub, mul, div, relu, exp, log, sqrt, neg, addScalar, subScalar, mulScalar, divScalar, powScalar, reshape, full, onesLike } from '../kernels/elementwise.ts';
export { sum, mean, max } from '../kernels/reduce.ts';
export { matmul } from '../kernels/matmul.ts';
export { liveTensors, memoryStats } from './memory.ts';
