// A convolution's shape, shared by conv2d.ts (the GEMM kernels, the op) and conv2d-direct.ts (the stem kernels),
// which conv2d.ts imports: here, so that both read one definition and import in one direction.

export interface ConvGeom {
  N: number;
  H: number;
  W: number;
  Cin: number;
  KH: number;
  KW: number;
  Cout: number;
  stride: number;
  pad: number;
  OH: number;
  OW: number;
}

/** Output size of a convolution (or pooling) along one axis. */
export function convOutSize(size: number, kernel: number, stride: number, pad: number): number {
  return Math.floor((size + 2 * pad - kernel) / stride) + 1;
}
