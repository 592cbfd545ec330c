// The one way a kernel is declared. A declaration names its uniforms and bindings; the WGSL module header (the
// uniform struct, every @group/@binding line, the entry point with its builtins, the flat index of a 1-D launch)
// is generated from it, uniforms are packed by name with WGSL's layout rules, and launches pass everything by
// name. Variants are separate declarations memoized under a key (`kernel(key, make)`), so a family's variants
// share one cache and one template. Every pipeline the engine creates comes from here (recorder.launch refuses
// anything else), which is what makes `dumpKernels()` and the coverage test complete.

import { launch, grid1d, groupGrid, markDeclared, type BindingKind, type BufferRange, type KernelSpec, type LaunchArg } from './recorder.ts';
import { Tensor } from './tensor.ts';
import { nodeModule, isNode } from './node-module.ts';

/** WGSL types a uniform may have. Arrays are of 16-byte elements, as the uniform address space requires. */
export type UniformType = 'u32' | 'i32' | 'f32' | 'vec4<u32>' | 'vec4<f32>' | 'vec4<i32>' | `array<vec4<${'u32' | 'f32' | 'i32'}>, ${number}>`;

/**
 * A storage binding: `'read T'` or `'rw T'` for `array<T>` (T a WGSL element type such as f32, vec4<f32>,
 * u32 or atomic<u32>), `{ read: 'S' }` / `{ rw: 'S' }` for a binding of type S itself (a struct declared in
 * the header), or `'texture'` for a read-only rgba32float 2-D storage texture.
 */
export type BindingDecl = `read ${string}` | `rw ${string}` | 'texture' | { read: string } | { rw: string };

export interface KernelDecl {
  /** Op name: the pipeline label, the prefix of every error about this kernel, and the dump file name. */
  name: string;
  /** Uniform values by name, packed into `p` in this order (so `p.n`, `p.scale`, ...). */
  uniforms?: Record<string, UniformType>;
  /** Storage buffers and textures by name, bound in this order after the uniforms. */
  bindings: Record<string, BindingDecl>;
  workgroupSize: number | readonly [number, number?, number?];
  /**
   * Emit `let i` (the flat index of a `{ threads }` launch, see grid1d) and return when `i >= limit`, where
   * `limit` is a WGSL expression, usually a uniform (`'p.n'`). Without it the body uses the builtins itself.
   */
  flat?: { limit: string };
  /**
   * One workgroup per item (a row, a chunk) in a `{ workgroups }` launch: emit `let <index>`, the workgroup's flat
   * index (see groupGrid), and return when `index >= limit`. The whole workgroup returns together, so what
   * follows (barriers, workgroup and subgroup reductions) stays in uniform control flow.
   */
  perWorkgroup?: { index: string; limit: string };
  /** WGSL extensions to enable, e.g. ['subgroups']; subgroups also bring the builtins `sgid` and `sgsize`. */
  enable?: readonly ('subgroups' | 'f16')[];
  /** Module-scope WGSL after the bindings: helper functions, constants, var<workgroup> arrays. */
  header?: string;
  /**
   * The entry point's body. In scope: `p` (uniforms), the bindings by name, and the builtins `gid`, `lid`,
   * `wid`, `nwg` (vec3<u32>), `li` (local_invocation_index), plus `sgid`, `sgsize` with subgroups.
   */
  body: string;
}

/** Workgroups per dimension; `{ threads }` for a flat launch (grid1d); `{ workgroups }` for one of perWorkgroup's (groupGrid). */
export type Grid = readonly [number, number?, number?] | { threads: number } | { workgroups: number };
export type KernelArg = number | readonly number[] | ArrayLike<number> | Tensor | BufferRange | GPUTextureView;

interface UniformSlot {
  name: string;
  type: UniformType;
  offset: number; // bytes
  words: number; // 4-byte words it occupies
  kind: 'u32' | 'i32' | 'f32';
}

/** A declared kernel: its generated WGSL, and launch() by name. */
export class Kernel {
  readonly name: string;
  readonly wgsl: string;
  /** The recorder's view: code and binding kinds in binding order. */
  readonly spec: KernelSpec;
  private readonly slots: UniformSlot[];
  private readonly uniformBytes: number;
  private readonly bindingNames: string[];
  private readonly wgX: number;

  constructor(readonly decl: KernelDecl) {
    this.name = decl.name;
    const { slots, bytes } = layoutUniforms(decl);
    this.slots = slots;
    this.uniformBytes = bytes;
    this.bindingNames = Object.keys(decl.bindings);
    const ws = typeof decl.workgroupSize === 'number' ? [decl.workgroupSize] : decl.workgroupSize;
    this.wgX = ws[0];
    this.wgsl = generate(decl, slots);
    const kinds: BindingKind[] = [];
    if (slots.length) kinds.push('uniform');
    for (const b of Object.values(decl.bindings)) kinds.push(b === 'texture' ? 'texture' : typeof b === 'object' ? ('read' in b ? 'read' : 'rw') : b.startsWith('read ') ? 'read' : 'rw');
    this.spec = markDeclared({ name: decl.name, code: this.wgsl, bindings: kinds });
  }

  /** Records one dispatch. `args` holds every uniform and binding by name; `grid` is workgroups or threads. */
  launch(args: Record<string, KernelArg | undefined>, grid: Grid): void {
    const list: LaunchArg[] = [];
    if (this.slots.length) list.push(this.packUniforms(args));
    for (const n of this.bindingNames) {
      const a = args[n];
      if (a === undefined) throw new Error(`${this.name}: no argument for binding '${n}'`);
      if (a instanceof Tensor) list.push(a.binding(this.name));
      else if (typeof a === 'number' || isNumberList(a)) throw new Error(`${this.name}: binding '${n}' needs a tensor or buffer range, got numbers`);
      else list.push(a as LaunchArg);
    }
    const wg: [number, number?, number?] = 'threads' in grid ? grid1d(grid.threads, this.wgX) : 'workgroups' in grid ? groupGrid(grid.workgroups) : [grid[0], grid[1], grid[2]];
    launch(this.spec, list, wg);
  }

  private packUniforms(args: Record<string, KernelArg | undefined>): ArrayBuffer {
    const buf = new ArrayBuffer(this.uniformBytes);
    const u32 = new Uint32Array(buf);
    const i32 = new Int32Array(buf);
    const f32 = new Float32Array(buf);
    for (const s of this.slots) {
      const v = args[s.name];
      if (v === undefined) throw new Error(`${this.name}: no value for uniform '${s.name}' (${s.type})`);
      const values = typeof v === 'number' ? [v] : isNumberList(v) ? Array.from(v as ArrayLike<number>) : null;
      if (!values) throw new Error(`${this.name}: uniform '${s.name}' (${s.type}) needs numbers`);
      if (values.length > s.words) throw new Error(`${this.name}: uniform '${s.name}' (${s.type}) holds ${s.words} values, got ${values.length}`);
      const at = s.offset / 4;
      const view = s.kind === 'u32' ? u32 : s.kind === 'i32' ? i32 : f32;
      for (let k = 0; k < values.length; k++) view[at + k] = values[k];
    }
    return buf;
  }
}

function isNumberList(a: unknown): boolean {
  return Array.isArray(a) || ArrayBuffer.isView(a);
}

function elementKind(type: UniformType): 'u32' | 'i32' | 'f32' {
  return type.includes('u32') ? 'u32' : type.includes('i32') ? 'i32' : 'f32';
}

/** WGSL uniform layout: scalars align to 4 bytes, vec4 and arrays of vec4 to 16; the struct rounds up to 16. */
function layoutUniforms(decl: KernelDecl): { slots: UniformSlot[]; bytes: number } {
  const slots: UniformSlot[] = [];
  let offset = 0;
  for (const [name, type] of Object.entries(decl.uniforms ?? {})) {
    let align = 4;
    let words = 1;
    const arr = /^array<vec4<(u32|f32|i32)>, (\d+)>$/.exec(type);
    if (arr) (align = 16), (words = 4 * Number(arr[2]));
    else if (type.startsWith('vec4')) (align = 16), (words = 4);
    else if (type !== 'u32' && type !== 'i32' && type !== 'f32') throw new Error(`${decl.name}: unsupported uniform type '${type}' for '${name}'`);
    offset = Math.ceil(offset / align) * align;
    slots.push({ name, type, offset, words, kind: elementKind(type) });
    offset += 4 * words;
  }
  return { slots, bytes: Math.max(16, Math.ceil(offset / 16) * 16) };
}

function generate(decl: KernelDecl, slots: UniformSlot[]): string {
  const lines: string[] = [];
  for (const e of decl.enable ?? []) lines.push(`enable ${e};`);
  let binding = 0;
  if (slots.length) {
    lines.push(`struct P { ${slots.map((s) => `${s.name}: ${s.type},`).join(' ')} }`);
    lines.push(`@group(0) @binding(${binding++}) var<uniform> p: P;`);
  }
  for (const [name, b] of Object.entries(decl.bindings)) {
    if (b === 'texture') {
      lines.push(`@group(0) @binding(${binding++}) var ${name}: texture_storage_2d<rgba32float, read>;`);
      continue;
    }
    let access: string;
    let type: string;
    if (typeof b === 'object') [access, type] = 'read' in b ? ['read', b.read] : ['rw', b.rw];
    else {
      const [a, ...rest] = b.split(' ');
      [access, type] = [a, `array<${rest.join(' ')}>`];
      if ((a !== 'read' && a !== 'rw') || !rest.length) throw new Error(`${decl.name}: binding '${name}' must be 'read T', 'rw T' or 'texture', got '${b}'`);
    }
    lines.push(`@group(0) @binding(${binding++}) var<storage, ${access === 'read' ? 'read' : 'read_write'}> ${name}: ${type};`);
  }
  if (decl.header) lines.push(decl.header.trim());
  const [x, y = 1, z = 1] = typeof decl.workgroupSize === 'number' ? [decl.workgroupSize] : decl.workgroupSize;
  const builtins = [
    '@builtin(global_invocation_id) gid: vec3<u32>',
    '@builtin(local_invocation_id) lid: vec3<u32>',
    '@builtin(workgroup_id) wid: vec3<u32>',
    '@builtin(num_workgroups) nwg: vec3<u32>',
    '@builtin(local_invocation_index) li: u32',
  ];
  if (decl.enable?.includes('subgroups')) builtins.push('@builtin(subgroup_invocation_id) sgid: u32', '@builtin(subgroup_size) sgsize: u32');
  lines.push(`@compute @workgroup_size(${x}, ${y}, ${z})`);
  lines.push(`fn main(${builtins.join(', ')}) {`);
  if (decl.flat && decl.perWorkgroup) throw new Error(`${decl.name}: a kernel is either flat or perWorkgroup, not both`);
  if (decl.flat) {
    lines.push(`  let i = gid.x + gid.y * (nwg.x * ${x * y * z}u);`);
    lines.push(`  if (i >= ${decl.flat.limit}) { return; }`);
  }
  if (decl.perWorkgroup) {
    const { index, limit } = decl.perWorkgroup;
    lines.push(`  let ${index} = wid.x + wid.y * nwg.x;`);
    lines.push(`  if (${index} >= ${limit}) { return; } // the whole workgroup: uniform control flow holds below`);
  }
  lines.push(decl.body.replace(/^\n+|\s+$/g, ''));
  lines.push('}');
  return lines.join('\n') + '\n';
}

// ---- the registry: one cache for every family's variants, the declared-spec mark, the dump hook ----------

const kernels = new Map<string, Kernel>();
let dumpHook: ((name: string, key: string, wgsl: string) => void) | null = null;

/** The kernel declared under `key`, declaring it with make() the first time. Keys are global: prefix the family. */
export function kernel(key: string, make: () => KernelDecl): Kernel {
  let k = kernels.get(key);
  if (!k) {
    k = new Kernel(make());
    kernels.set(key, k);
    dumpHook?.(k.name, key, k.wgsl);
  }
  return k;
}

/** A one-off declaration (no variants): cached under its name. */
export function defineKernel(decl: KernelDecl): Kernel {
  return kernel(`${decl.name}|${JSON.stringify(decl)}`, () => decl);
}

/** Every kernel declared so far, by key (for tests and tools). */
export function declaredKernels(): ReadonlyMap<string, Kernel> {
  return kernels;
}

/**
 * Calls `write(name, key, wgsl)` for every kernel declared so far and every later one: how BYOL_DUMP_WGSL
 * writes each generated module to a file (installed by the Node device provider) and how a page could list them.
 */
export function dumpKernels(write: ((name: string, key: string, wgsl: string) => void) | null): void {
  dumpHook = write;
  if (write) for (const [key, k] of kernels) write(k.name, key, k.wgsl);
}

/**
 * Writes every kernel declared so far, and each later one, to `dir/<name>.<hash>.wgsl` with its registry key in a
 * first-line comment, so the WGSL a launch runs can be read and diffed without a debugger. Node only.
 * `BYOL_DUMP_WGSL=DIR` in the environment does this from the start of the process.
 */
export async function dumpWgslTo(dir: string): Promise<void> {
  const [fs, path, crypto] = await Promise.all([nodeModule('node:fs'), nodeModule('node:path'), nodeModule('node:crypto')]);
  fs.mkdirSync(dir, { recursive: true });
  dumpKernels((name, key, wgsl) => {
    const hash = crypto.createHash('sha256').update(wgsl).digest('hex').slice(0, 10);
    fs.writeFileSync(path.join(dir, `${name.replace(/[^\w.-]/g, '_')}.${hash}.wgsl`), `// ${key}\n${wgsl}`);
  });
}

const dumpDir = isNode ? process.env.BYOL_DUMP_WGSL : undefined;
if (dumpDir) {
  dumpWgslTo(dumpDir).catch((e) => console.error(`BYOL_DUMP_WGSL: cannot write kernels to ${dumpDir}: ${(e as Error).message}`));
}
