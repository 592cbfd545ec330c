// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}), then the raw
// little-endian tensor data, offsets relative to its start. No file system here, so browsers can build a
// download Blob from serializeSafetensors(); Node's atomic save/load is in safetensors-node.ts.

export interface TensorEntry {
  shape: number[];
  data: Float32Array;
  /** The dtype in the file when it was not F32 (reading converts every dtype to float32). */
  dtype?: string;
}

export type Metadata = Record<string, string>;

/** Same limit as the reference implementation: a larger header means a corrupt file, not a big model. */
const MAX_HEADER = 100_000_000;

const DTYPE_BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

const littleEndian = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function decodeData(bytes: Uint8Array, dtype: string, n: number): Float32Array {
  // copy through Uint8Array.prototype.slice: a Node Buffer's own slice() is a view of the shared pool
  if (dtype === 'F32' && littleEndian) return new Float32Array(Uint8Array.prototype.slice.call(bytes).buffer, 0, n);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    switch (dtype) {
      case 'F32': out[i] = v.getFloat32(4 * i, true); break;
      case 'F64': out[i] = v.getFloat64(8 * i, true); break;
      case 'F16': out[i] = f16ToF32(v.getUint16(2 * i, true)); break;
      case 'BF16': out[i] = new Float32Array(Uint32Array.of(v.getUint16(2 * i, true) << 16).buffer)[0]; break;
      case 'I64': out[i] = Number(v.getBigInt64(8 * i, true)); break;
      case 'I32': out[i] = v.getInt32(4 * i, true); break;
      case 'I16': out[i] = v.getInt16(2 * i, true); break;
      case 'I8': out[i] = v.getInt8(i); break;
      default: out[i] = v.getUint8(i); // U8, BOOL
    }
  }
  return out;
}

function entriesOf(map: ReadonlyMap<string, TensorEntry> | Iterable<[string, TensorEntry]>): [string, TensorEntry][] {
  return [...(map as Iterable<[string, TensorEntry]>)];
}

/**
 * The file's bytes: tensors in the map's order as F32, or as I64 where an entry says dtype 'I64' (integer
 * counters such as BatchNorm's num_batches_tracked, which PyTorch stores as int64); header padded to 8 bytes.
 */
export function serializeSafetensors(map: ReadonlyMap<string, TensorEntry> | Iterable<[string, TensorEntry]>, metadata?: Metadata): Uint8Array {
  const what = 'serializeSafetensors';
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') throw new Error(`${what}: metadata '${k}' must be a string, got ${typeof v}`);
    header.__metadata__ = metadata;
  }
  const entries = entriesOf(map);
  let offset = 0;
  for (const [name, e] of entries) {
    if (!name || name === '__metadata__') throw new Error(`${what}: invalid tensor name '${name}'`);
    if (name in header) throw new Error(`${what}: duplicate tensor name '${name}'`);
    if (!Array.isArray(e.shape) || e.shape.some((d) => !Number.isInteger(d) || d < 0)) throw new Error(`${what}: '${name}' has invalid shape [${e.shape}]`);
    const n = e.shape.reduce((a, b) => a * b, 1);
    if (!(e.data instanceof Float32Array) || e.data.length !== n) {
      throw new Error(`${what}: '${name}' has shape [${e.shape.join(', ')}] (${n} values) but ${e.data?.length} Float32Array values`);
    }
    if (e.dtype !== undefined && e.dtype !== 'F32' && e.dtype !== 'I64') throw new Error(`${what}: '${name}' has dtype ${e.dtype}; only F32 and I64 can be written`);
    const width = e.dtype === 'I64' ? 8 : 4;
    header[name] = { dtype: e.dtype === 'I64' ? 'I64' : 'F32', shape: e.shape, data_offsets: [offset, offset + width * n] };
    offset += width * n;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, json.length, true);
  view.setUint32(4, 0, true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const [, e] of entries) {
    if (e.dtype === 'I64') {
      for (let i = 0; i < e.data.length; i++) view.setBigInt64(at + 8 * i, BigInt(Math.round(e.data[i])), true);
      at += 8 * e.data.length;
      continue;
    }
    if (littleEndian) out.set(new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength), at);
    else for (let i = 0; i < e.data.length; i++) view.setFloat32(at + 4 * i, e.data[i], true);
    at += e.data.byteLength;
  }
  return out;
}

/**
 * Parses and validates a safetensors file: plausible header length within the file, valid JSON, known
 * dtypes, shapes and offsets consistent with each other, tensors tiling the data exactly (no overlap, no
 * gap, nothing missing or left over). Errors name `source` (the file) and what is wrong.
 */
export function decodeSafetensors(bytes: Uint8Array, source = 'safetensors data'): { tensors: Map<string, TensorEntry>; metadata: Metadata } {
  const fail = (msg: string): never => {
    throw new Error(`${source}: ${msg}`);
  };
  if (!(bytes instanceof Uint8Array)) fail('expected a Uint8Array');
  if (bytes.length < 8) fail(`truncated: ${bytes.length} bytes, but a safetensors file starts with an 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const lo = view.getUint32(0, true);
  const hi = view.getUint32(4, true);
  const n = hi * 2 ** 32 + lo;
  if (n === 0 || n > MAX_HEADER) fail(`header length ${n} is not plausible (not a safetensors file, or corrupt)`);
  if (8 + n > bytes.length) fail(`truncated: the header needs ${n} bytes after the length field but only ${bytes.length - 8} follow`);
  let text = '';
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    fail('header is not valid UTF-8 (corrupt file)');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  const dataStart = 8 + n;
  const dataLen = bytes.length - dataStart;
  const metadata: Metadata = {};
  const found: { name: string; dtype: string; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('__metadata__ is not an object');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__ '${k}' is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== 'object' || e === null) fail(`tensor '${name}' is not an object in the header`);
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_BYTES)) {
      fail(`tensor '${name}' has unsupported dtype ${JSON.stringify(e.dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
    }
    if (!Array.isArray(e.shape) || e.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      fail(`tensor '${name}' has invalid shape ${JSON.stringify(e.shape)}`);
    }
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || off.some((d) => !Number.isSafeInteger(d) || d < 0) || off[0] > off[1]) {
      fail(`tensor '${name}' has invalid data_offsets ${JSON.stringify(off)}`);
    }
    const shape = e.shape as number[];
    const [begin, end] = off as number[];
    const need = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[e.dtype as string];
    if (end - begin !== need) {
      fail(`tensor '${name}' (${e.dtype} [${shape.join(', ')}], ${need} bytes) has data_offsets [${begin}, ${end}] spanning ${end - begin} bytes`);
    }
    found.push({ name, dtype: e.dtype as string, shape, begin, end });
  }
  // the tensors must tile the data: sorted by offset, each starts where the previous ended
  const sorted = [...found].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev = '';
  for (const t of sorted) {
    if (t.begin < pos) fail(`tensor '${t.name}' [${t.begin}, ${t.end}) overlaps tensor '${prev}' (ends at ${pos})`);
    if (t.begin > pos) fail(`gap of ${t.begin - pos} bytes before tensor '${t.name}' at data offset ${pos}`);
    if (t.end > dataLen) fail(`truncated: tensor '${t.name}' ends at data byte ${t.end} but only ${dataLen} bytes of data follow the header`);
    pos = t.end;
    prev = t.name;
  }
  if (pos !== dataLen) fail(`${dataLen - pos} unexpected bytes after the last tensor (the header accounts for ${pos} bytes of data)`);
  const tensors = new Map<string, TensorEntry>();
  for (const t of found) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const data = decodeData(bytes.subarray(dataStart + t.begin, dataStart + t.end), t.dtype, n);
    tensors.set(t.name, t.dtype === 'F32' ? { shape: t.shape, data } : { shape: t.shape, data, dtype: t.dtype });
  }
  return { tensors, metadata };
}

/** decodeSafetensors() without the metadata. */
export function parseSafetensors(bytes: Uint8Array, source?: string): Map<string, TensorEntry> {
  return decodeSafetensors(bytes, source).tensors;
}
