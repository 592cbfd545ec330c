// What the page shows about the WebGPU adapter: its identity, the optional features the engine can use
// (shader-f16, subgroups), and each limit the engine depends on next to what the engine's kernels need, so an
// adapter like SwiftShader (256 invocations, 32 KiB of workgroup memory, 10 storage buffers) is checked up front.

import type { GpuContext } from '../../nn/index.ts';
import { matmulKernel, matmulTuning, tileName, DEFAULT_TILE } from '../../kernels/matmul.ts';

export interface Requirement {
  limit: string;
  have: number;
  need: number;
  what: string;
  ok: boolean;
}

export interface AdapterReport {
  vendor: string;
  architecture: string;
  description: string;
  isFallback: boolean;
  subgroupSizes: [number, number] | null;
  features: { 'shader-f16': boolean; subgroups: boolean; 'timestamp-query': boolean };
  requirements: Requirement[];
  /** every requirement met */
  ok: boolean;
}

/** Workgroup size and workgroup-memory bytes declared by a WGSL module (f32/u32/vec4 arrays, as the engine uses). */
export function wgslFootprint(code: string): { size: number[]; invocations: number; workgroupBytes: number; storageBuffers: number } {
  const decl = /@workgroup_size\(\s*([^)]*)\)/.exec(code);
  const size = decl ? decl[1].split(',').map((s) => Number(s.trim().replace(/u$/, '')) || 1) : [1];
  let workgroupBytes = 0;
  for (const m of code.matchAll(/var<workgroup>\s+\w+\s*:\s*array<\s*(vec([234])<\s*\w+\s*>|\w+)\s*,\s*(\d+)\s*>/g)) {
    workgroupBytes += Number(m[3]) * 4 * (m[2] ? Number(m[2] === '3' ? 4 : m[2]) : 1);
  }
  const storageBuffers = (code.match(/var<storage/g) ?? []).length;
  return { size, invocations: size.reduce((a, b) => a * b, 1), workgroupBytes, storageBuffers };
}

/** The engine's largest workgroup footprint: the matmul tile in use; elementwise and reductions use 256 x 1 x 1. */
export function engineNeeds(): { invocations: number; sizeX: number; sizeY: number; workgroupBytes: number; storageBuffers: number; tile: string } {
  const t = matmulTuning().tile;
  // the broadcast kernel (CPU adapters) is one subgroup per workgroup; the tiled kernel is the larger footprint
  const tiled = t.kind === 'broadcast' ? DEFAULT_TILE : t;
  const mm = wgslFootprint(matmulKernel({ kind: 'tiled', transA: false, transB: false, vecA: false, vecB: false, aligned: false, BM: tiled.BM, BN: tiled.BN, BK: tiled.BK, TM: tiled.TM }).wgsl);
  return {
    invocations: Math.max(256, mm.invocations),
    sizeX: Math.max(256, mm.size[0]),
    sizeY: mm.size[1] ?? 1,
    workgroupBytes: mm.workgroupBytes,
    storageBuffers: mm.storageBuffers,
    tile: tileName(t),
  };
}

export function describeAdapter(ctx: GpuContext): AdapterReport {
  const lim = ctx.info.limits;
  const need = engineNeeds();
  const req = (limit: string, n: number, what: string): Requirement => ({ limit, have: lim[limit] ?? 0, need: n, what, ok: (lim[limit] ?? 0) >= n });
  const requirements = [
    req('maxComputeInvocationsPerWorkgroup', need.invocations, `elementwise, reduce, matmul tile ${need.tile}`),
    req('maxComputeWorkgroupSizeX', need.sizeX, 'elementwise and reduce workgroups'),
    req('maxComputeWorkgroupSizeY', need.sizeY, 'matmul workgroups'),
    req('maxComputeWorkgroupStorageSize', need.workgroupBytes, `matmul tile ${need.tile} in workgroup memory`),
    req('maxStorageBuffersPerShaderStage', need.storageBuffers, 'matmul A, B, C'),
  ];
  const ai: any = (ctx.adapter as any).info ?? {};
  return {
    vendor: ctx.info.vendor,
    architecture: ctx.info.architecture,
    description: ctx.info.description,
    isFallback: ctx.info.isFallback,
    subgroupSizes: typeof ai.subgroupMinSize === 'number' ? [ai.subgroupMinSize, ai.subgroupMaxSize] : null,
    features: { 'shader-f16': ctx.hasF16, subgroups: ctx.hasSubgroups, 'timestamp-query': ctx.hasTimestamps },
    requirements,
    ok: requirements.every((r) => r.ok),
  };
}
