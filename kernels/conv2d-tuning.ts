// conv2d's per-device tuning record (engine/tuning.ts, family 'conv2d'): which variant of the GEMM template runs
// (kernels/conv2d.ts), with which register blocks or workgroup tiles, and the adapter's defaults.

import { gpu, isLavapipe, isCpuAdapter } from '../engine/device.ts';
import { tuningFor } from '../engine/tuning.ts';

/** Register blocks of the 'subgroups' and 'portable' kernels. fwd/dx: a lane group computes SG*RB rows x SG*4*CB columns. */
export interface ConvTiles {
  RB: number;
  CB: number;
  /** dW: row quads per step (SG / RQ pixels per step), column quads per lane, pixel steps per iteration (fetched before their products) */
  RQ: number;
  dwCB: number;
  U: number;
  /** fwd/dx on narrow layers: rows a lane accumulates (RB = narrowRows / GQ blocks); 0 turns the narrow variant off */
  narrowRows: number;
}

/**
 * Tiles of the 'tiled' kernels. fwd/dx: a workgroup computes TM rows x TN columns, stepping TK channels of one tap
 * at a time; dW: TM rows (kh, kw, ci) x TN columns, stepping TK output pixels. Each invocation keeps RM rows x CQ
 * column quads, so a workgroup has (TM / RM) * (TN / 4 / CQ) invocations.
 */
export interface TiledTiles {
  TM: number;
  TN: number;
  TK: number;
  RM: number;
  CQ: number;
}

export type ConvVariant = 'subgroups' | 'portable' | 'tiled';

/** conv2d's per-device tuning record (engine/tuning.ts, family 'conv2d'). */
export interface ConvTuning {
  variant: ConvVariant;
  /**
   * Layers with 1-3 input channels (stems): 'direct' (kernels/conv2d-direct.ts) or 'gemm' (the variant's GEMM,
   * channels padded to 4). Unset in a record: fewChannelsDefault() (convTuning() fills it in). dx always takes the GEMM: a stem's input needs no gradient.
   */
  fewChannels?: 'direct' | 'gemm';
  /**
   * 'subgroups' / 'portable' kernels: read the source image and the weight of aligned layers through operand
   * textures (engine/textures.ts) instead of storage buffers. Unset in a record: texturesDefault().
   */
  textures?: boolean;
  /**
   * 'tiled' kernels: run a batchNorm over a conv's input as the prologue of its forward and dW launches
   * (kernels/batchnorm-conv.ts) instead of a normalize pass. Unset: bnPrologueDefault().
   */
  bnPrologue?: boolean;
  /** blocks of the 'subgroups' / 'portable' kernels */
  tiles: ConvTiles;
  /** blocks of the 'tiled' kernels */
  tiled: TiledTiles;
}

/** A call's overrides: any field, and any part of the block records. */
export interface ConvTuningOverrides {
  variant?: ConvVariant;
  fewChannels?: 'direct' | 'gemm';
  textures?: boolean;
  bnPrologue?: boolean;
  tiles?: Partial<ConvTiles>;
  tiled?: Partial<TiledTiles>;
}

/**
 * For subgroups of 4 or 8 lanes (and the portable kernels, which cap the blocks themselves). CB 2 applies where a
 * layer has at least SG * 2 output quads (64 channels at 8 lanes); dW fetches U = 2 pixel steps per iteration.
 */
export const DEFAULT_CONV_TILES: ConvTiles = { RB: 4, CB: 2, RQ: 8, dwCB: 2, U: 2, narrowRows: 16 };
/**
 * For 16 lanes (lavapipe with LP_NATIVE_VECTOR_WIDTH=512): a lane holds SG * RB accumulator rows, so RB halves to
 * keep the same register footprint; dW keeps 8 row quads (2 pixels per step) with one column quad, unrolled twice.
 */
export const DEFAULT_CONV_TILES_16: ConvTiles = { RB: 2, CB: 1, RQ: 8, dwCB: 1, U: 2, narrowRows: 16 };
/** 128 invocations, 8 KiB of workgroup memory: inside every limit of WebGPU's defaults and SwiftShader's. */
export const DEFAULT_TILED_TILES: TiledTiles = { TM: 64, TN: 64, TK: 16, RM: 4, CQ: 2 };

/** The adapter's subgroup width where the subgroup kernels can use it (4, 8 or 16), else 0. */
export function convSubgroupWidth(): number {
  const c = gpu('conv2d');
  const info: any = (c.adapter as any).info ?? {};
  const width = info.subgroupMinSize === info.subgroupMaxSize ? info.subgroupMinSize : 0;
  return c.hasSubgroups && (width === 4 || width === 8 || width === 16) ? width : 0;
}

/**
 * The record an adapter starts with: the subgroup kernels on lavapipe, where they were measured to win; the tiled
 * kernel everywhere else (GPUs with 32 or 64 lanes or none, and SwiftShader, whose shader compiler does not finish
 * the narrow subgroup and portable kernels in minutes). tuneConv() may pick otherwise by measurement.
 */
export function defaultConvTuning(): ConvTuning {
  const sg = convSubgroupWidth();
  return {
    variant: sg && isLavapipe() ? 'subgroups' : 'tiled',
    fewChannels: fewChannelsDefault(),
    textures: texturesDefault(),
    tiles: sg >= 16 ? DEFAULT_CONV_TILES_16 : DEFAULT_CONV_TILES,
    tiled: DEFAULT_TILED_TILES,
  };
}

/**
 * The direct stem kernels where they were measured to win (lavapipe: forward 2x, dW 3x on the 1 -> 16 stem); the
 * GEMM elsewhere, where they have not been measured (SwiftShader did not finish compiling the page's 3 -> 5
 * channel check in 180 s with them).
 */
export function fewChannelsDefault(): 'direct' | 'gemm' {
  return isLavapipe() ? 'direct' : 'gemm';
}

/**
 * Operand textures for the lane kernels where they were measured to win (lavapipe, which fetches a texel for all
 * lanes with vector loads: `npx tsx bench/step-fusion-ab.ts 12 --what textures`, `bench/conv-ab.ts`); storage
 * buffers elsewhere until measured (tuneConv() times both).
 */
export function texturesDefault(): boolean {
  return isLavapipe();
}

/**
 * The batchNorm prologue where it saves memory traffic that costs more than the work it adds: on GPUs. A staged
 * element is normalized once per tap (9 times for 3x3) with four loads of per-channel values, against one write and
 * one read of the activation saved. On CPU adapters (lavapipe, SwiftShader), where those loads are per-lane loops,
 * the step measured slower with it (bench/results/step-ab-session12.md). Not yet measured on a GPU.
 */
export function bnPrologueDefault(): boolean {
  return !isCpuAdapter(gpu('conv2d').info);
}

/** The tuning one call uses: the device's record with the call's overrides. */
export function convTuning(over?: ConvTuningOverrides): ConvTuning {
  const base = tuningFor<ConvTuning>('conv2d', defaultConvTuning);
  // a record written before fewChannels or textures existed (a tune cache) takes the adapter's default for them
  const fewChannels = over?.fewChannels ?? base.fewChannels ?? fewChannelsDefault();
  const textures = over?.textures ?? base.textures ?? texturesDefault();
  if (!over) return base.fewChannels && base.textures !== undefined ? base : { ...base, fewChannels, textures };
  return {
    variant: over.variant ?? base.variant,
    fewChannels,
    textures,
    ...((over.bnPrologue ?? base.bnPrologue) !== undefined ? { bnPrologue: over.bnPrologue ?? base.bnPrologue } : {}),
    tiles: { ...base.tiles, ...over.tiles },
    tiled: { ...base.tiled, ...over.tiled },
  };
}
