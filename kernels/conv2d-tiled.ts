// conv2d's 'tiled' kernels (kernels/conv2d.ts describes the template): forward, dx and dW as the GPU peers'
// implicit GEMM, with tiles of both operands staged in workgroup memory.

import type { KernelDecl } from '../engine/kernel.ts';
import { gpu } from '../engine/device.ts';
import type { TiledTiles } from './conv2d-tuning.ts';
import { range, XYZW, lines, GEMM_UNIFORMS, DW_UNIFORMS, gemmBindings, dwBindings, quadHelpers, PARITY_CLASS, TILE_DECODE, tapLoops, bnPrologueFn, BN_PROLOGUE_BINDINGS } from './conv2d-wgsl.ts';

// ---- 'tiled': forward and dx, staged in workgroup memory ---------------------------------------------------
// A workgroup owns TM rows x TN columns of the output. For each tap and each step of TK channels it stages
//   As[TM][TK / 4]  the rows' source pixels at that tap (vec4 along channels; zero outside the image)
//   Bs[TK][TN / 4]  the weights of that tap (vec4 along output channels)
// then each invocation accumulates its RM rows x CQ column quads from them. A loading invocation keeps one
// channel quad and a few fixed rows, so the rows are decoded once, before the loops.

export interface TiledGemm extends TiledTiles {
  variant: 'tiled';
  mode: 'fwd' | 'dx';
  aligned: boolean;
  /** epilogue: add the matching element of `addend` to every stored value */
  addend: boolean;
  /** epilogue, last: max(value, 0) */
  relu: boolean;
  /**
   * dx epilogue: batchNorm's backward sums of each row tile (LanesGemm.bnSums), the workgroup's row groups added
   * in workgroup memory (`Ss`, tiledEpilogueBytes more)
   */
  bnSums?: boolean;
  bnRelu?: boolean;
  /**
   * fwd epilogue: the per-channel moments (ChannelMoments: mean and squared deviations) of each row tile, as the
   * lane kernels write them (LanesGemm.moments), the workgroup's row groups merged in workgroup memory (`Ms`,
   * tiledEpilogueBytes more). The launch asks for it only where every row of every tile is a real output row.
   */
  moments?: boolean;
  /**
   * fwd prologue (aligned): the image is a batchNorm's input, normalized as it is staged (bnPrologueFn); `relu`:
   * the batchNorm had a ReLU
   */
  bnPrologue?: { relu: boolean };
}

/**
 * Workgroup memory a per-tile reduction in the epilogue (bnSums, moments) adds to a tile: two vec4 per column quad
 * per row group of invocations.
 */
export function tiledEpilogueBytes(t: TiledTiles): number {
  return 2 * 16 * (t.TN / 4) * (t.TM / t.RM);
}

/** Workgroup shape and per-invocation load counts of a tile; throws on a tile the device cannot run. */
export function tiledShape(t: TiledTiles, dW: boolean) {
  const { TM, TN, TK, RM, CQ } = t;
  const WX = TN / (4 * CQ);
  const WY = TM / RM;
  const WG = WX * WY;
  const A = dW ? { quads: TM / 4, rows: TK } : { quads: TK / 4, rows: TM }; // the x / a tile: per row, quads
  const B = { quads: TN / 4, rows: TK };
  const bytes = 4 * (TM * TK + TK * TN);
  const lim = gpu('conv2d').info.limits;
  const maxWg = Math.min(lim.maxComputeInvocationsPerWorkgroup ?? 256, lim.maxComputeWorkgroupSizeX ?? 256);
  const maxBytes = lim.maxComputeWorkgroupStorageSize ?? 16384;
  const ints = [TM, TN, TK, RM, CQ].every((n) => Number.isInteger(n) && n > 0);
  if (!ints || TN % (4 * CQ) || TM % RM || TK % 4 || TM % 4 || (dW && RM % 4) || WG % A.quads || WG % B.quads || WG > maxWg || bytes > maxBytes) {
    throw new Error(
      `conv2d: tiled tiles ${JSON.stringify(t)} do not fit: need TN % (4*CQ) = 0, TM % RM = 0, TK and TM multiples of 4${dW ? ', RM a multiple of 4' : ''}, ` +
        `the workgroup (${WG} invocations, at most ${maxWg}) a multiple of ${A.quads} and ${B.quads}, and ${bytes} bytes of workgroup memory (at most ${maxBytes})`,
    );
  }
  return { WX, WY, WG, A, B, bytes, loadsA: Math.ceil(A.rows / (WG / A.quads)), loadsB: Math.ceil(B.rows / (WG / B.quads)) };
}

export function tiledGemmDecl(v: TiledGemm): KernelDecl {
  const { mode, aligned, TM, TN, TK, RM, CQ } = v;
  const { WX, WY, WG, A, B, loadsA, loadsB } = tiledShape(v, false);
  const KQ = TK / 4;
  const NQ = TN / 4;
  const ja = range(loadsA);
  const ra = range(RM);
  const cq = range(CQ);
  const acc = (i: number, c: number) => `acc${i}_${c}`;
  const rowsOf = (j: number) => `li / ${A.quads}u + ${j * (WG / A.quads)}u`;
  // the rows this invocation loads: origin of the patch at the first tap (dx: of its parity class), in bounds?
  const decode = ja.map((j) =>
    lines(2, [
      `let ar${j} = ${rowsOf(j)};`,
      `let m${j} = min(rowTile * ${TM}u + ar${j}, p.rows - 1u);`,
      `let n${j} = i32(m${j} / (p.dh * p.dw));`,
      `let r${j} = i32((m${j} / p.dw) % p.dh);`,
      `let q${j} = i32(m${j} % p.dw);`,
      mode === 'fwd' ? `let y0${j} = r${j} * p.s - p.pad;` : `let y0${j} = (r${j} * p.s + ph + p.pad - kh0) / p.s;`,
      mode === 'fwd' ? `let x0${j} = q${j} * p.s - p.pad;` : `let x0${j} = (q${j} * p.s + pw + p.pad - kw0) / p.s;`,
      `let live${j} = ar${j} < ${TM}u && rowTile * ${TM}u + ar${j} < p.rows;`,
    ]),
  );
  const tapAddress = ja.map((j) => {
    const [yy, xx] = mode === 'fwd' ? [`y0${j} + kh`, `x0${j} + kw`] : [`y0${j} - (kh - kh0) / p.s`, `x0${j} - (kw - kw0) / p.s`];
    return lines(4, [
      `let yy${j} = ${yy}; let xx${j} = ${xx};`,
      `let ok${j} = live${j} && yy${j} >= 0 && yy${j} < p.sh && xx${j} >= 0 && xx${j} < p.sw;`,
      `let pix${j} = u32(max((n${j} * p.sh + yy${j}) * p.sw + xx${j}, 0));`,
    ]);
  });
  if (v.bnPrologue && (mode !== 'fwd' || !aligned)) throw new Error('conv2d: the batchNorm prologue is for the forward of aligned layers');
  const stageA = ja.map((j) => {
    const load = `loadA(pix${j}, min(c0 / 4u + aq, p.kq - 1u))`;
    const value = v.bnPrologue ? `bnIn(${load}, min(c0 / 4u + aq, p.kq - 1u), u32(n${j}))` : load;
    return `      if (ar${j} < ${TM}u) { As[ar${j} * ${KQ}u + aq] = select(vec4<f32>(0.0), ${value}, ok${j} && c0 + aq * 4u < p.ck); }`;
  });
  const stageB = range(loadsB).map((j) =>
    lines(6, [
      `{ let k = li / ${NQ}u + ${j * (WG / NQ)}u;`,
      `  if (k < ${TK}u) { Bs[k * ${NQ}u + bq] = select(vec4<f32>(0.0), loadB(kb + min(c0 + k, p.ck - 1u), min(bcol, p.nq - 1u)), c0 + k < p.ck && bcol < p.nq); } }`,
    ]),
  );
  const fmas = [
    ...ra.map((i) => `      let a${i} = As[(ty * ${RM}u + ${i}u) * ${KQ}u + kq];`),
    ...range(4).flatMap((kk) => [
      ...cq.map((c) => `      let b${kk}_${c} = Bs[(kq * 4u + ${kk}u) * ${NQ}u + tx + ${c * WX}u];`),
      ...ra.flatMap((i) => cq.map((c) => `      ${acc(i, c)} = fma(vec4<f32>(a${i}.${XYZW[kk]}), b${kk}_${c}, ${acc(i, c)});`)),
    ]),
  ];
  const outRow = (i: number) =>
    mode === 'fwd'
      ? [`let mr = rowTile * ${TM}u + ty * ${RM}u + ${i}u;`, `let o = select(-1, i32(mr), mr < p.rows);`]
      : [
          `let mr = rowTile * ${TM}u + ty * ${RM}u + ${i}u;`,
          `let m = min(mr, p.rows - 1u);`,
          `let ih = i32((m / p.dw) % p.dh) * p.s + ph;`,
          `let iw = i32(m % p.dw) * p.s + pw;`,
          `let o = select(-1, (i32(m / (p.dh * p.dw)) * p.th + ih) * p.tw + iw, mr < p.rows && ih < p.th && iw < p.tw);`,
        ];
  const stores = ra.map((i) =>
    [
      '  {',
      lines(4, outRow(i)),
      `    if (o >= 0) {`,
      ...cq.map((c) => {
        const value = `${acc(i, c)} + bias${c}${v.addend ? ` + loadAddend(u32(o), col${c})` : ''}`;
        return `      if (col${c} < p.nq) { storeY(u32(o), col${c}, ${v.relu ? `max(${value}, vec4<f32>(0.0))` : value}); }`;
      }),
      '    }',
      '  }',
    ].join('\n'),
  );
  // batchNorm's backward sums: each invocation adds up its rows of its column quads (padding rows count 0), the
  // row groups' sums meet in workgroup memory, and one invocation per column quad stores the tile's partial pair
  if (v.bnSums && (mode !== 'dx' || !aligned)) throw new Error('conv2d: batchNorm sums are a dx epilogue of aligned layers');
  const bnSumStores = !v.bnSums ? '' : [
    '  {',
    `    let s0 = 4u * ((rowTile * ${TM}u) / p.grp) * p.nq;`,
    ...cq.map((c) => `    let cl${c} = min(col${c}, p.nq - 1u); let shift${c} = bst[s0 + cl${c}]; let dmean${c} = bst[s0 + p.nq + cl${c}];` +
      (v.bnRelu ? ` let scale${c} = bst[s0 + 3u * p.nq + cl${c}]; let bb${c} = bbeta[cl${c}];` : '')),
    `    ${cq.map((c) => `var sa${c} = vec4<f32>(0.0); var sb${c} = vec4<f32>(0.0);`).join(' ')}`,
    ...ra.map((i) => [
      '    {',
      lines(6, outRow(i)),
      ...cq.map((c) => lines(6, [
        `{ let e = u32(max(o, 0)) * p.nq + cl${c}; let xm = (bx[e] - shift${c}) - dmean${c};`,
        `  let gv = select(vec4<f32>(0.0), ${acc(i, c)}${v.addend ? ' + addend[e]' : ''}, ${v.bnRelu ? `(xm * scale${c} + bb${c} > vec4<f32>(0.0)) & ` : ''}vec4<bool>(o >= 0));`,
        `  sa${c} += gv; sb${c} += gv * xm; }`,
      ])),
      '    }',
    ].join('\n')),
    ...cq.map((c) => `    Ss[(ty * ${NQ}u + tx + ${c * WX}u) * 2u] = sa${c}; Ss[(ty * ${NQ}u + tx + ${c * WX}u) * 2u + 1u] = sb${c};`),
    '    workgroupBarrier();',
    `    if (li < ${NQ}u) {`,
    '      var A = vec4<f32>(0.0); var B = vec4<f32>(0.0);',
    `      for (var k = 0u; k < ${WY}u; k++) { A += Ss[(k * ${NQ}u + li) * 2u]; B += Ss[(k * ${NQ}u + li) * 2u + 1u]; }`,
    `      let col = colTile * ${NQ}u + li;`,
    '      if (col < p.nq) { part[2u * rowTile * p.nq + col] = A; part[(2u * rowTile + 1u) * p.nq + col] = B; }',
    '    }',
    '  }',
  ].join('\n');
  // the moments: each invocation's RM rows of its column quads give a mean and squared deviations (two passes over
  // registers); the row groups' pairs meet in workgroup memory and merge in order by Chan et al.'s update (equal
  // counts of RM rows), so a stored pair is the whole tile's
  if (v.moments && (mode !== 'fwd' || v.bnSums)) throw new Error('conv2d: moments are a forward epilogue');
  const momentStores = !v.moments ? '' : [
    '  {',
    ...cq.map((c) => {
      const vals = ra.map((i) => `(${acc(i, c)} + bias${c})`);
      return lines(4, [
        `let mean${c} = (${vals.join(' + ')}) / ${RM}.0;`,
        `var m2${c} = vec4<f32>(0.0);`,
        ...vals.map((x) => `{ let d = ${x} - mean${c}; m2${c} = fma(d, d, m2${c}); }`),
        `Ms[(ty * ${NQ}u + tx + ${c * WX}u) * 2u] = mean${c}; Ms[(ty * ${NQ}u + tx + ${c * WX}u) * 2u + 1u] = m2${c};`,
      ]);
    }),
    '    workgroupBarrier();',
    `    if (li < ${NQ}u) {`,
    '      var mean = Ms[li * 2u]; var m2 = Ms[li * 2u + 1u];',
    `      for (var k = 1u; k < ${WY}u; k++) {`,
    `        let mb = Ms[(k * ${NQ}u + li) * 2u]; let d = mb - mean; let f = 1.0 / f32(k + 1u);`,
    `        mean = fma(d, vec4<f32>(f), mean); m2 = m2 + Ms[(k * ${NQ}u + li) * 2u + 1u] + d * d * (${RM}.0 * f32(k) * f);`,
    '      }',
    `      let col = colTile * ${NQ}u + li;`,
    aligned
      ? '      if (col < p.nq) { mom[2u * rowTile * p.nq + col] = mean; mom[(2u * rowTile + 1u) * p.nq + col] = m2; }'
      : range(4).map((j) => `      if (col * 4u + ${j}u < p.cn) { mom[2u * rowTile * p.cn + col * 4u + ${j}u] = mean.${XYZW[j]}; mom[(2u * rowTile + 1u) * p.cn + col * 4u + ${j}u] = m2.${XYZW[j]}; }`).join('\n'),
    '    }',
    '  }',
  ].join('\n');
  return {
    name: `conv2d.${mode}.tiled`,
    uniforms: { ...GEMM_UNIFORMS, ...(v.bnSums ? { grp: 'u32' } : {}), ...(v.bnPrologue ? { pimg: 'u32' } : {}) },
    bindings: {
      ...gemmBindings(aligned, v.addend, !!v.moments),
      ...(!v.bnSums ? {} : { bx: 'read vec4<f32>', bst: 'read vec4<f32>', ...(v.bnRelu ? { bbeta: 'read vec4<f32>' } : {}), part: 'rw vec4<f32>' }),
      ...(v.bnPrologue ? BN_PROLOGUE_BINDINGS : {}),
    },
    workgroupSize: WG,
    header: `
var<workgroup> As: array<vec4<f32>, ${TM * KQ}>;
var<workgroup> Bs: array<vec4<f32>, ${TK * NQ}>;${v.bnSums ? `\nvar<workgroup> Ss: array<vec4<f32>, ${2 * NQ * WY}>;` : ''}${v.moments ? `\nvar<workgroup> Ms: array<vec4<f32>, ${2 * NQ * WY}>;` : ''}${v.bnPrologue ? `\n${bnPrologueFn(v.bnPrologue.relu, 'p.kq')}` : ''}
${quadHelpers(aligned, [{ name: 'loadA', buf: 'a', quads: 'p.kq', count: 'p.ck' }, { name: 'loadB', buf: 'b', quads: 'p.nq', count: 'p.cn' }, { name: 'loadBias', buf: 'bias', quads: 'p.nq', count: 'p.cn' }, ...(v.addend ? [{ name: 'loadAddend', buf: 'addend', quads: 'p.nq', count: 'p.cn' }] : [])], { name: 'storeY', buf: 'y', quads: 'p.nq', count: 'p.cn' })}`,
    body: `
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= p.tiles) { return; }
  ${TILE_DECODE}
  ${mode === 'dx' ? PARITY_CLASS : ''}
  // loading: channel quad aq of ${loadsA} row(s); output-channel quad bq of ${loadsB} weight row(s)
  let aq = li % ${KQ}u;
  let bq = li % ${NQ}u;
  let bcol = colTile * ${NQ}u + bq;
${decode.join('\n')}
  // computing: rows ty * ${RM} .. + ${RM - 1}, column quads tx + ${WX} * c (of ${WX} x ${WY} invocations)
  let tx = li % ${WX}u;
  let ty = li / ${WX}u;
  ${ra.flatMap((i) => cq.map((c) => `var ${acc(i, c)} = vec4<f32>(0.0);`)).join(' ')}
  ${tapLoops(mode)}
${tapAddress.join('\n')}
    let kb = u32(kh * p.kw + kw) * p.ck;
    for (var c0 = 0u; c0 < p.ck; c0 += ${TK}u) {
      workgroupBarrier();
${stageA.join('\n')}
${stageB.join('\n')}
      workgroupBarrier();
      for (var kq = 0u; kq < ${KQ}u; kq++) {
${fmas.map((l) => '  ' + l).join('\n')}
      }
    }
  }
  }
${lines(2, cq.flatMap((c) => [`let col${c} = colTile * ${NQ}u + tx + ${c * WX}u;`, `let bias${c} = select(vec4<f32>(0.0), loadBias(0u, min(col${c}, p.nq - 1u)), p.hasBias != 0u);`]))}
${stores.join('\n')}
${bnSumStores}
${momentStores}`,
  };
}

// ---- 'tiled': dW ------------------------------------------------------------------------------------------
// A workgroup owns TM rows (kh, kw, ci) x TN columns (co) of one chunk's partial sum. For each step of TK output
// pixels it stages
//   Xs[TK][TM / 4]  each pixel's input at the rows' taps (vec4 of 4 consecutive ci; zero outside the image)
//   Ds[TK][TN / 4]  dy of the same pixels
// then each invocation accumulates RM rows (RM / 4 quads) x CQ column quads.

export interface TiledDw extends TiledTiles {
  variant: 'tiled';
  aligned: boolean;
  /** x is a batchNorm's input, normalized as it is staged (TiledGemm.bnPrologue) */
  bnPrologue?: { relu: boolean };
}

export function tiledDwDecl(v: TiledDw): KernelDecl {
  const { aligned, TM, TN, TK, RM, CQ } = v;
  const { WX, WY, WG, A, B, loadsA, loadsB } = tiledShape(v, true);
  const MQ = TM / 4;
  const NQ = TN / 4;
  const RQ = RM / 4;
  const cq = range(CQ);
  const acc = (i: number, c: number) => `acc${i}_${c}`;
  if (v.bnPrologue && !aligned) throw new Error('conv2d: the batchNorm prologue is for aligned layers');
  const loadX = 'loadX(u32(max((n * p.H + yy) * p.W + xx, 0)), ciq)';
  const stageX = range(loadsA).map((j) =>
    lines(4, [
      `{ let k = li / ${MQ}u + ${j * (WG / MQ)}u;`,
      `  let px = px0 + k;`,
      // past the last pixel (px >= total, discarded by ok) the image index stays in range for x and the prologue's statistics
      `  let n = i32(min(px, p.total - 1u) / (p.OH * p.OW)); let oh = i32((px / p.OW) % p.OH); let ow = i32(px % p.OW);`,
      `  let yy = oh * p.s + ky; let xx = ow * p.s + kx;`,
      `  let ok = rowOk && px < end && yy >= 0 && yy < p.H && xx >= 0 && xx < p.W;`,
      `  if (k < ${TK}u) { Xs[k * ${MQ}u + xq] = select(vec4<f32>(0.0), ${v.bnPrologue ? `bnIn(${loadX}, ciq, u32(n))` : loadX}, ok); } }`,
    ]),
  );
  const stageD = range(loadsB).map((j) =>
    lines(4, [
      `{ let k = li / ${NQ}u + ${j * (WG / NQ)}u;`,
      `  let px = px0 + k;`,
      `  if (k < ${TK}u) { Ds[k * ${NQ}u + dq] = select(vec4<f32>(0.0), loadDy(min(px, p.total - 1u), min(dcol, p.nq - 1u)), px < end && dcol < p.nq); } }`,
    ]),
  );
  const fmas = [
    ...range(RQ).map((i) => `      let x${i} = Xs[k * ${MQ}u + ty * ${RQ}u + ${i}u];`),
    ...cq.map((c) => `      let d${c} = Ds[k * ${NQ}u + tx + ${c * WX}u];`),
    ...range(RQ).flatMap((i) => range(4).flatMap((j) => cq.map((c) => `      ${acc(4 * i + j, c)} = fma(vec4<f32>(x${i}.${XYZW[j]}), d${c}, ${acc(4 * i + j, c)});`))),
  ];
  // partial sums of this chunk: out[chunk][(kh, kw, ci)][co]
  const stores = range(RQ).map((i) =>
    [
      `  { let rq = rowTile * ${MQ}u + ty * ${RQ}u + ${i}u; if (rq < p.rqt) {`,
      `    let base = chunk * (p.wsize / p.cout) + (rq / p.cq) * p.cin;`,
      `    let ci0 = (rq % p.cq) * 4u;`,
      ...range(4).map((j) => `    if (ci0 + ${j}u < p.cin) {${cq.map((c) => ` if (col${c} < p.nq) { storeOut(base + ci0 + ${j}u, col${c}, ${acc(4 * i + j, c)}); }`).join('')} }`),
      '  } }',
    ].join('\n'),
  );
  return {
    name: 'conv2d.dW.tiled',
    uniforms: v.bnPrologue ? { ...DW_UNIFORMS, pimg: 'u32' } : DW_UNIFORMS,
    bindings: { ...dwBindings(aligned), ...(v.bnPrologue ? BN_PROLOGUE_BINDINGS : {}) },
    workgroupSize: WG,
    header: `
var<workgroup> Xs: array<vec4<f32>, ${TK * MQ}>;
var<workgroup> Ds: array<vec4<f32>, ${TK * NQ}>;
${quadHelpers(aligned, [{ name: 'loadX', buf: 'x', quads: 'p.cq', count: 'p.cin' }, { name: 'loadDy', buf: 'dy', quads: 'p.nq', count: 'p.cout' }], { name: 'storeOut', buf: 'out', quads: 'p.nq', count: 'p.cout' })}${v.bnPrologue ? `\n${bnPrologueFn(v.bnPrologue.relu, 'p.cq')}` : ''}`,
    body: `
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= p.tiles) { return; }
  ${TILE_DECODE}
  let chunk = rt / p.rowTiles;
  // loading: row quad xq (one tap, one ci quad) of ${loadsA} pixel(s); dy column quad dq of ${loadsB} pixel(s)
  let xq = li % ${MQ}u;
  let rqx = rowTile * ${MQ}u + xq;
  let rowOk = rqx < p.rqt;
  let tap = i32(min(rqx, p.rqt - 1u) / p.cq);
  let ciq = min(rqx, p.rqt - 1u) % p.cq;
  let ky = tap / p.kw - p.pad;
  let kx = tap % p.kw - p.pad;
  let dq = li % ${NQ}u;
  let dcol = colTile * ${NQ}u + dq;
  // computing: row quads ty * ${RQ} .. + ${RQ - 1}, column quads tx + ${WX} * c (of ${WX} x ${WY} invocations)
  let tx = li % ${WX}u;
  let ty = li / ${WX}u;
  ${range(RM).flatMap((i) => cq.map((c) => `var ${acc(i, c)} = vec4<f32>(0.0);`)).join(' ')}
  // this chunk's output pixels (perChunk counts pixels here)
  let start = chunk * p.perChunk;
  let end = min(start + p.perChunk, p.total);
  for (var px0 = start; px0 < end; px0 += ${TK}u) {
    workgroupBarrier();
${stageX.join('\n')}
${stageD.join('\n')}
    workgroupBarrier();
    for (var k = 0u; k < ${TK}u; k++) {
${fmas.join('\n')}
    }
  }
${lines(2, cq.map((c) => `let col${c} = colTile * ${NQ}u + tx + ${c * WX}u;`))}
${stores.join('\n')}`,
  };
}
