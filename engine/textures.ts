// Operand textures: a tensor's values copied into an rgba32float storage texture, for kernels that read an operand
// through textureLoad instead of a storage buffer. lavapipe fetches a storage-texture texel for 8 lanes with 8
// vector loads and a transpose, while a storage-buffer vec4 whose address is not a compile-time constant costs a
// bounds-checked scalar loop over lanes and components (bench/results/matmul-notes.md). Textures are kept per
// (slot, size) and reused: the copy and the reads are recorded in order in the one command encoder, so the next
// kernel may overwrite a texture the previous one read. Least recently used ones go beyond a cap of bytes.

import { gpu, onRelease } from './device.ts';
import { encoderForCopy, recorderStats } from './recorder.ts';
import type { Tensor } from './tensor.ts';

interface OperandTexture {
  texture: GPUTexture;
  view: GPUTextureView;
  bytes: number;
}
const textures = new Map<string, OperandTexture>(); // in least-recently-used order
let textureBytes = 0;
const retired: { texture: GPUTexture; submits: number }[] = [];
const TEXTURE_USAGE = 0x08 | 0x02; // STORAGE_BINDING | COPY_DST
/** The texture for `key` ([rows, texels] of vec4s), made or reused, with the others trimmed to make room. */
function slot(key: string, label: string, texels: number, rows: number, capBytes: number): OperandTexture {
  const submits = recorderStats().submits;
  // an evicted texture may still be read by recorded commands: destroy it once those were submitted
  while (retired.length && retired[0].submits < submits) retired.shift()!.texture.destroy();
  let e = textures.get(key);
  if (e) textures.delete(key);
  else {
    const texture = gpu(label).device.createTexture({ label, size: [texels, rows], format: 'rgba32float', usage: TEXTURE_USAGE });
    e = { texture, view: texture.createView(), bytes: texels * rows * 16 };
    textureBytes += e.bytes;
  }
  trimTextures(capBytes - e.bytes, submits); // e is out of the map here: the others make room for it
  textures.set(key, e);
  return e;
}

/** Whether a [rows, cols] operand fits operandTexture: rows of whole 256-byte multiples, within the size limit. */
export function fitsOperandTexture(rows: number, cols: number): boolean {
  const maxDim = gpu('operandTexture').device.limits.maxTextureDimension2D;
  return rows > 0 && cols > 0 && cols % 64 === 0 && cols / 4 <= maxDim && rows <= maxDim;
}

/**
 * `t` viewed as [rows, cols] (cols % 64 == 0) copied into the texture of `slot` for that size: texel (c / 4, r)
 * holds t[r, c..c+3]. The cap evicts least recently used textures beyond `capBytes`.
 */
export function operandTexture(slotName: string, t: Tensor, rows: number, cols: number, capBytes: number): GPUTextureView {
  const e = slot(`${slotName}${rows}x${cols}`, `${slotName} [${rows}, ${cols}]`, cols / 4, rows, capBytes);
  encoderForCopy().copyBufferToTexture({ buffer: t.storage.buffer, offset: t.byteOffset, bytesPerRow: cols * 4, rowsPerImage: rows }, { texture: e.texture }, [cols / 4, rows]);
  return e.view;
}

/**
 * Texels per row of `t`'s flat texture: the fewest of 64, 128, 256, ... (rows of 1 KiB or more, whole multiples of
 * copyBufferToTexture's 256-byte pitch) that keep the rows within the size limit; 0 where `t` is not whole vec4s or
 * too large for any.
 */
export function flatTextureWidth(t: Tensor): number {
  const maxDim = gpu('flatTexture').device.limits.maxTextureDimension2D;
  const texels = t.size / 4;
  if (t.size === 0 || t.size % 4 !== 0) return 0;
  for (let width = 64; width <= maxDim; width *= 2) if (Math.ceil(texels / width) <= maxDim) return width;
  return 0;
}

/**
 * `t`'s vec4s in reading order, `width` (flatTextureWidth(t)) per row: vec4 i at texel (i % width, i / width).
 * Kernels compile the width in (a power of two: the division is a shift).
 */
export function flatTexture(slotName: string, t: Tensor, width: number, capBytes: number): GPUTextureView {
  const texels = t.size / 4;
  const rows = Math.ceil(texels / width);
  const e = slot(`${slotName}flat${width}x${rows}`, `${slotName} [${rows} x ${width} vec4]`, width, rows, capBytes);
  const full = Math.floor(texels / width);
  const enc = encoderForCopy();
  const pitch = width * 16;
  if (full) enc.copyBufferToTexture({ buffer: t.storage.buffer, offset: t.byteOffset, bytesPerRow: pitch, rowsPerImage: full }, { texture: e.texture }, [width, full]);
  // the last, partial row on its own: a full one would read past the tensor
  const rest = texels % width;
  if (rest) enc.copyBufferToTexture({ buffer: t.storage.buffer, offset: t.byteOffset + full * pitch, bytesPerRow: pitch }, { texture: e.texture, origin: [0, full] }, [rest, 1]);
  return e.view;
}

/** Evicts least recently used textures until those in the map take at most `limit` bytes. */
function trimTextures(limit: number, submits: number): void {
  let inMap = 0;
  for (const e of textures.values()) inMap += e.bytes;
  for (const [k, old] of textures) {
    if (inMap <= limit) break;
    textures.delete(k);
    inMap -= old.bytes;
    textureBytes -= old.bytes;
    retired.push({ texture: old.texture, submits });
  }
}

/** Textures kept for kernel operands (memory accounting). */
export function operandTextureStats(): { textures: number; bytes: number } {
  return { textures: textures.size, bytes: textureBytes };
}

onRelease(() => {
  textures.clear(); // destroyed with the device
  textureBytes = 0;
  retired.length = 0;
});
