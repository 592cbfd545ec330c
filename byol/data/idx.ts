// IDX files (the MNIST / Fashion-MNIST format): a big-endian header [0, 0, type, ndims] + ndims u32 sizes, then
// the payload row-major. Only unsigned bytes (type 0x08) are read; that is what the image and label files hold.
// Gzip-compressed files (.gz, or any file starting with the gzip magic) are inflated with node:zlib.

import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

const UBYTE = 0x08;

/** Reads a whole file; errors name the path. */
export function readBytes(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new Error(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** Reads a file, inflating it when it is gzip-compressed; errors name the path. */
export function readMaybeGzip(path: string): Uint8Array {
  const raw = readBytes(path);
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      return gunzipSync(raw);
    } catch (e) {
      throw new Error(`${path}: not a valid gzip file (${(e as Error).message})`);
    }
  }
  if (path.endsWith('.gz')) throw new Error(`${path}: expected a gzip file, but it does not start with the gzip magic bytes 1f 8b`);
  return raw;
}

/** Parses an IDX byte array; `expectDims` (when given) is the required number of dimensions. */
export function parseIdx(bytes: Uint8Array, name: string, expectDims?: number): IdxArray {
  if (bytes.length < 4) throw new Error(`${name}: too short for an IDX header (${bytes.length} bytes)`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new Error(`${name}: bad IDX magic number ${hex(bytes, 4)} (expected 00 00 08 0N)`);
  }
  if (bytes[2] !== UBYTE) throw new Error(`${name}: IDX element type 0x${bytes[2].toString(16).padStart(2, '0')} is not supported (only unsigned bytes, 0x08)`);
  const ndims = bytes[3];
  if (ndims === 0) throw new Error(`${name}: IDX header declares 0 dimensions`);
  if (expectDims !== undefined && ndims !== expectDims) {
    throw new Error(`${name}: expected an IDX file with ${expectDims} dimensions, the header declares ${ndims}`);
  }
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) throw new Error(`${name}: truncated IDX header (${bytes.length} bytes, need ${headerBytes} for ${ndims} dimensions)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  for (let d = 0; d < ndims; d++) dims.push(view.getUint32(4 + 4 * d, false));
  const payload = dims.reduce((a, b) => a * b, 1);
  const found = bytes.length - headerBytes;
  if (found !== payload) {
    const what = ndims === 1 ? 'labels' : ndims === 3 ? 'pixels' : 'values';
    throw new Error(`${name}: expected ${payload} bytes of ${what} after the header (dims [${dims.join(', ')}]), found ${found}`);
  }
  return { dims, data: bytes.subarray(headerBytes) };
}

export function readIdx(path: string, expectDims?: number): IdxArray {
  return parseIdx(readMaybeGzip(path), path, expectDims);
}

/** An images file ([N, H, W]) and a labels file ([N]) of the same N, labels checked against `numClasses`. */
export function readIdxPair(imagesPath: string, labelsPath: string, numClasses: number): { images: Uint8Array; labels: Int32Array; n: number; height: number; width: number } {
  const img = readIdx(imagesPath, 3);
  const lab = readIdx(labelsPath, 1);
  const [n, height, width] = img.dims;
  if (lab.dims[0] !== n) throw new Error(`${labelsPath}: has ${lab.dims[0]} labels but ${imagesPath} has ${n} images`);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const l = lab.data[i];
    if (l >= numClasses) throw new Error(`${labelsPath}: label ${l} at index ${i} is out of range 0..${numClasses - 1}`);
    labels[i] = l;
  }
  return { images: img.data, labels, n, height, width };
}

function hex(bytes: Uint8Array, n: number): string {
  return [...bytes.subarray(0, n)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
}
