// The safetensors file format (https://github.com/huggingface/safetensors), F32 only, in plain JS so that the
// page can offer a checkpoint download: an 8-byte little-endian header length, a JSON header naming each tensor's
// dtype, shape and byte range, then the raw little-endian data. PyTorch reads it with safetensors.torch.load_file.

export interface NamedArray {
  name: string;
  shape: number[];
  data: Float32Array;
}

const littleEndian = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

export function encodeSafetensors(tensors: NamedArray[], metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`encodeSafetensors: tensor '${t.name}' has ${t.data.length} values for shape [${t.shape.join(', ')}]`);
    if (t.name in header) throw new Error(`encodeSafetensors: duplicate tensor name '${t.name}'`);
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + n * 4] };
    offset += n * 4;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8); // the reference writer pads so the data starts 8-aligned
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const t of tensors) {
    if (littleEndian) out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    else for (let i = 0; i < t.data.length; i++) view.setFloat32(at + i * 4, t.data[i], true);
    at += t.data.byteLength;
  }
  return out;
}

export function decodeSafetensors(bytes: Uint8Array): { metadata: Record<string, string>; tensors: NamedArray[] } {
  if (bytes.length < 8) throw new Error(`decodeSafetensors: ${bytes.length} bytes is too short for a header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headLen = Number(view.getBigUint64(0, true));
  if (8 + headLen > bytes.length) throw new Error(`decodeSafetensors: header length ${headLen} exceeds the file (${bytes.length} bytes)`);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headLen)));
  const base = 8 + headLen;
  const tensors: NamedArray[] = [];
  for (const [name, info] of Object.entries<any>(header)) {
    if (name === '__metadata__') continue;
    if (info.dtype !== 'F32') throw new Error(`decodeSafetensors: tensor '${name}' has dtype ${info.dtype}; only F32 is supported`);
    const [b, e] = info.data_offsets as [number, number];
    if (base + e > bytes.length || e - b !== 4 * info.shape.reduce((x: number, y: number) => x * y, 1)) {
      throw new Error(`decodeSafetensors: tensor '${name}' has byte range [${b}, ${e}) that does not fit shape [${info.shape}] or the file`);
    }
    const data = new Float32Array((e - b) / 4);
    for (let i = 0; i < data.length; i++) data[i] = view.getFloat32(base + b + i * 4, true);
    tensors.push({ name, shape: info.shape, data });
  }
  return { metadata: header.__metadata__ ?? {}, tensors };
}
