// A data set held on the GPU as uint8 (4 pixels per u32 word), uploaded once; a batch is gathered by index on
// the GPU and converted to f32 in [0, 1], so the CPU only uploads the B indices per step. Data sets larger
// than one storage binding (maxStorageBufferBindingSize, 128 MiB by default: CIFAR-10 train is 150 MB) are
// split into chunks of whole images, all bound to the one gather dispatch. Works in Node and browsers.

import { gpu } from '../../engine/device.ts';
import { kernel, defineKernel, type Kernel, type KernelArg, type BindingDecl } from '../../engine/kernel.ts';
import { Tensor, tensor, empty, keep, fmtShape } from '../../engine/tensor.ts';
import type { ImageDataset } from './image-dataset.ts';

const WG = 256;

export interface GpuDatasetOptions {
  /** Largest chunk in bytes; default the device's maxStorageBufferBindingSize. Tests set it small. */
  maxChunkBytes?: number;
}

/** Gather kernel for `chunks` data buffers: out[b, e] = byte e of image idx[b], / 255. */
function gatherKernel(chunks: number): Kernel {
  return kernel(`gpuDataset.gather|${chunks}`, () => {
    const bindings: Record<string, BindingDecl> = { idx: 'read i32' };
    for (let k = 0; k < chunks; k++) bindings[`d${k}`] = 'read u32';
    bindings.out = 'rw f32';
    let pick = '';
    for (let k = 0; k < chunks; k++) pick += `${k ? ' else ' : '  '}if (chunk == ${k}u) { word = d${k}[at >> 2u]; }`;
    return {
      name: 'gpuDataset.gather',
      uniforms: { n: 'u32', imageBytes: 'u32', perChunk: 'u32', images: 'u32' },
      bindings,
      workgroupSize: WG,
      flat: { limit: 'p.n' },
      body: `
  let img = idx[i / p.imageBytes];
  // out-of-range indices (possible only from a GPU index tensor, which is not checked on the CPU) read as 0
  if (img < 0 || u32(img) >= p.images) { out[i] = 0.0; return; }
  let chunk = u32(img) / p.perChunk;
  let at = (u32(img) % p.perChunk) * p.imageBytes + i % p.imageBytes;
  var word = 0u;
${pick}
  out[i] = f32((word >> ((at & 3u) * 8u)) & 255u) / 255.0;`,
    };
  });
}

const labelKernel = defineKernel({
  name: 'gpuDataset.labels',
  uniforms: { n: 'u32', images: 'u32' },
  bindings: { idx: 'read i32', labels: 'read i32', out: 'rw i32' },
  workgroupSize: WG,
  flat: { limit: 'p.n' },
  body: `
  let img = idx[i];
  out[i] = select(-1, labels[u32(img)], img >= 0 && u32(img) < p.images);`,
});

export class GpuDataset {
  readonly name: string;
  readonly n: number;
  readonly height: number;
  readonly width: number;
  readonly channels: number;
  readonly classes: string[];
  /** The CPU labels (kept for evaluation code), or null. */
  readonly labels: Int32Array | null;
  /** Images per chunk buffer, and the chunk buffers themselves (owned here, destroyed by dispose()). */
  readonly imagesPerChunk: number;
  private chunks: GPUBuffer[] = [];
  private labelsGpu: Tensor | null = null;
  private disposed = false;

  constructor(ds: ImageDataset, opts: GpuDatasetOptions = {}) {
    const { device } = gpu();
    this.name = ds.name;
    this.n = ds.n;
    this.height = ds.height;
    this.width = ds.width;
    this.channels = ds.channels;
    this.classes = [...ds.classes];
    this.labels = ds.labels;
    const imageBytes = this.imageBytes;
    if (!(ds.n > 0 && imageBytes > 0)) throw new Error(`GpuDataset: '${ds.name}' is empty (n ${ds.n}, image ${ds.height}x${ds.width}x${ds.channels})`);
    if (ds.images.length !== ds.n * imageBytes) {
      throw new Error(`GpuDataset: '${ds.name}' has ${ds.images.length} pixel bytes, expected n*H*W*C = ${ds.n * imageBytes}`);
    }
    const limit = Math.min(opts.maxChunkBytes ?? Infinity, device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    // chunks hold whole images; the +3 leaves room to pad a chunk to whole u32 words
    this.imagesPerChunk = Math.min(ds.n, Math.floor((limit - 3) / imageBytes));
    if (this.imagesPerChunk < 1) throw new Error(`GpuDataset: one image of '${ds.name}' (${imageBytes} bytes) exceeds the largest storage binding (${limit} bytes)`);
    const nChunks = Math.ceil(ds.n / this.imagesPerChunk);
    const maxChunks = device.limits.maxStorageBuffersPerShaderStage - 2; // the gather also binds the indices and the output
    if (nChunks > maxChunks) {
      const mib = (x: number) => `${(x / 2 ** 20).toFixed(0)} MiB`;
      throw new Error(`GpuDataset: '${ds.name}' (${mib(ds.images.length)}) needs ${nChunks} buffers of at most ${mib(limit)}, but a kernel can bind only ${maxChunks} besides its indices and output (maxStorageBuffersPerShaderStage ${device.limits.maxStorageBuffersPerShaderStage}); use a smaller data set or a device with larger limits`);
    }
    for (let k = 0; k < nChunks; k++) {
      const bytes = ds.images.subarray(k * this.imagesPerChunk * imageBytes, Math.min(ds.n, (k + 1) * this.imagesPerChunk) * imageBytes);
      const buffer = device.createBuffer({ label: `${ds.name} pixels ${k}`, size: Math.ceil(bytes.length / 4) * 4, usage: 0x80, mappedAtCreation: true }); // STORAGE
      new Uint8Array(buffer.getMappedRange()).set(bytes);
      buffer.unmap();
      this.chunks.push(buffer);
    }
    if (ds.labels) this.labelsGpu = keep(tensor(ds.labels, [ds.n], { dtype: 'i32' }));
  }

  get imageBytes(): number {
    return this.height * this.width * this.channels;
  }

  /** Bytes held on the GPU (pixels and labels). */
  get bytes(): number {
    return this.chunks.reduce((a, b) => a + b.size, 0) + (this.labelsGpu ? this.labelsGpu.byteLength : 0);
  }

  get chunkCount(): number {
    return this.chunks.length;
  }

  /** Images at `indices` as [B, H, W, C] f32 in [0, 1], in one dispatch. */
  gather(indices: Int32Array | Tensor): Tensor {
    const idx = this.indexTensor('gather', indices);
    const b = idx.size;
    const out = empty([b, this.height, this.width, this.channels], 'f32', 'gpuDataset.gather');
    const args: Record<string, KernelArg> = { n: out.size, imageBytes: this.imageBytes, perChunk: this.imagesPerChunk, images: this.n, idx, out };
    this.chunks.forEach((buffer, k) => (args[`d${k}`] = { buffer, offset: 0, size: buffer.size }));
    gatherKernel(this.chunks.length).launch(args, { threads: out.size });
    if (idx !== indices) idx.dispose();
    return out;
  }

  /** Labels at `indices` as an i32 [B] tensor (-1 for an out-of-range GPU index). */
  labelsOf(indices: Int32Array | Tensor): Tensor {
    if (!this.labelsGpu || !this.labels) throw new Error(`labelsOf: data set '${this.name}' has no labels`);
    if (!(indices instanceof Tensor)) {
      this.checkIndices('labelsOf', indices);
      const picked = new Int32Array(indices.length);
      for (let i = 0; i < indices.length; i++) picked[i] = this.labels[indices[i]];
      return tensor(picked, [picked.length], { dtype: 'i32' });
    }
    const idx = this.indexTensor('labelsOf', indices);
    const out = empty([idx.size], 'i32', 'gpuDataset.labels');
    labelKernel.launch({ n: idx.size, images: this.n, idx, labels: this.labelsGpu, out }, { threads: idx.size });
    return out;
  }

  /** Frees the GPU copies; the object is unusable afterwards. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const b of this.chunks) b.destroy();
    this.chunks = [];
    this.labelsGpu?.dispose();
    this.labelsGpu = null;
  }

  private indexTensor(op: string, indices: Int32Array | Tensor): Tensor {
    if (this.disposed) throw new Error(`${op}: GpuDataset '${this.name}' was disposed`);
    if (indices instanceof Tensor) {
      indices.assertLive(op);
      if (indices.dtype !== 'i32' || indices.rank !== 1) throw new Error(`${op}: indices must be an i32 tensor of rank 1, got ${indices.dtype} ${fmtShape(indices.shape)}`);
      if (indices.size === 0) throw new Error(`${op}: empty index list`);
      return indices;
    }
    this.checkIndices(op, indices);
    return tensor(indices, [indices.length], { dtype: 'i32' });
  }

  private checkIndices(op: string, indices: Int32Array): void {
    if (this.disposed) throw new Error(`${op}: GpuDataset '${this.name}' was disposed`);
    if (!(indices instanceof Int32Array)) throw new Error(`${op}: indices must be an Int32Array or an i32 tensor`);
    if (indices.length === 0) throw new Error(`${op}: empty index list`);
    for (let i = 0; i < indices.length; i++) {
      const k = indices[i];
      if (!(k >= 0 && k < this.n)) throw new Error(`${op}: index ${k} at position ${i} is out of range 0..${this.n - 1} for data set '${this.name}'`);
    }
  }
}
