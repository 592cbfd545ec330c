// conv2d's 'subgroups' and 'portable' kernels (kernels/conv2d.ts describes the template): forward and dx as GEMMs
// whose lanes share loaded rows by subgroup operations (or each load them), and dW as outer products over pixels.

import type { KernelDecl, BindingDecl } from '../engine/kernel.ts';
import { type Lanes, range, XYZW, lines, GEMM_UNIFORMS, DW_UNIFORMS, gemmBindings, dwBindings, PARITY_CLASS, TILE_DECODE, tapLoops } from './conv2d-wgsl.ts';

// ---- 'subgroups' / 'portable': forward and dx -------------------------------------------------------------

export interface LanesGemm {
  variant: 'lanes';
  mode: 'fwd' | 'dx';
  /** channels along k and output channels both % 4 == 0: vec4 loads and stores; else scalar loads with checks */
  aligned: boolean;
  RB: number;
  CB: number;
  /**
   * Narrow outputs (subgroups only): with fewer column quads than lanes, GQ lanes (a power of two >= the quads)
   * split the columns and the SG / GQ lane groups split the rows, reading them by subgroupShuffle. 0: one
   * column quad per lane and every row in every lane (wide layers).
   */
  GQ: number;
  lanes: Lanes;
  /** epilogue: add the matching element of `addend` (a gradient accumulated so far, or a residual) to every stored value */
  addend: boolean;
  /** epilogue, last: max(value, 0) */
  relu: boolean;
  /**
   * fwd epilogue: also write the per-channel moments (ChannelMoments) of each row tile, one block per tile. The
   * launch asks for it only where every row of every tile is a real output row.
   */
  moments: boolean;
  /**
   * dx epilogue (aligned, stride 1): also write, per row tile, the two per-channel sums that the backward of a
   * batchNorm before this conv needs, over the dx values it stores: sum(g) and sum(g * xm), with g the value
   * (masked by that batchNorm's ReLU, recomputed as its forward did) and xm = (x - shift) - dmean its centered
   * input (`bx`, statistics `bst` per group of `p.grp` rows). batchNorm then skips its pass over x and dy
   * (kernels/batchnorm-conv.ts). The launch asks for it only where no row tile straddles two groups.
   */
  bnSums?: boolean;
  /** with bnSums: the batchNorm had a ReLU (its mask needs `bbeta`) */
  bnRelu?: boolean;
  /** aligned: read the source image (x, or dy for dx) through an operand texture [N * sh rows, sw * ck / 4 texels] */
  texA: boolean;
  /** aligned: read the weight's vec4s through a flat texture of this many texels per row (engine/textures.ts); 0: the buffer */
  texB: number;
}

/** With subgroups the tile must be uniform (subgroupBroadcast needs uniform control flow): one group per workgroup. */
export function laneTile(l: Lanes): string {
  return `let tile = ${l.G === 1 ? 'wid.x + wid.y * nwg.x' : `(wid.x + wid.y * nwg.x) * ${l.G}u + li / ${l.SG}u`};
  if (tile >= p.tiles) { return; }
  let l = ${l.subgroups ? 'sgid' : `li % ${l.SG}u`};`;
}

/**
 * Per-lane values: with subgroups a lane owns one row per block (suffix _rb) and reads the others' by broadcast;
 * without, a lane computes every row of the block itself (suffix _rb_r).
 */
export function rowsOf(l: Lanes, rb: number): { s: string; lane: string }[] {
  return l.subgroups ? [{ s: `${rb}`, lane: 'l' }] : range(l.SG).map((r) => ({ s: `${rb}_${r}`, lane: `${r}u` }));
}

export function lanesGemmDecl(v: LanesGemm): KernelDecl {
  const { mode, aligned, RB, CB, GQ, lanes: L, addend, relu, moments } = v;
  const act = (e: string, zero: string) => (relu ? `max(${e}, ${zero})` : e);
  const SG = L.SG;
  // rows a lane accumulates per block: every row (wide) or those of its lane group (narrow: r = j * RG + g)
  const RG = GQ ? SG / GQ : 1;
  const laneRows = GQ ? GQ : SG;
  const shared = (rb: number, r: number, name: string) =>
    GQ ? `subgroupShuffle(${name}${rb}, ${r * RG}u + g)` : L.subgroups ? `subgroupBroadcast(${name}${rb}, ${r}u)` : `${name}${rb}_${r}`;
  const acc = (rb: number, r: number, cb: number) => `a_${(rb * laneRows + r) * CB + cb}`;
  const allRows = range(RB).flatMap((rb) => rowsOf(L, rb).map((x) => ({ ...x, rb })));
  const cbs = range(CB);

  // (y0, x0): the patch origin in the source image at the first tap; o: the output row (-1: none)
  const decode = allRows.map(({ s, rb, lane }) =>
    lines(2, [
      `let mr${s} = rowTile * ${SG * RB}u + ${rb * SG}u + ${lane};`,
      `let m${s} = min(mr${s}, p.rows - 1u);`,
      `let n${s} = i32(m${s} / (p.dh * p.dw));`,
      `let r${s} = i32((m${s} / p.dw) % p.dh);`,
      `let q${s} = i32(m${s} % p.dw);`,
      ...(mode === 'fwd'
        ? [`let y0${s} = r${s} * p.s - p.pad;`, `let x0${s} = q${s} * p.s - p.pad;`, `let o${s} = select(-1, i32(mr${s}), mr${s} < p.rows);`]
        : [
            // dy rows of the class's first tap; each further tap (kh += s) is one row up
            `let ih${s} = r${s} * p.s + ph;`,
            `let iw${s} = q${s} * p.s + pw;`,
            `let y0${s} = (ih${s} + p.pad - kh0) / p.s;`,
            `let x0${s} = (iw${s} + p.pad - kw0) / p.s;`,
            `let o${s} = select(-1, (n${s} * p.th + ih${s}) * p.tw + iw${s}, mr${s} < p.rows && ih${s} < p.th && iw${s} < p.tw);`,
          ]),
      `let nb${s} = n${s} * p.sh;`,
    ]),
  );
  const columns = GQ
    ? lines(2, [`let cq0 = l % ${GQ}u;`, `let cl0 = min(cq0, p.nq - 1u);`, `let g = l / ${GQ}u;`])
    : lines(2, cbs.flatMap((cb) => [`let cq${cb} = colTile * ${SG * CB}u + ${cb * SG}u + l;`, `let cl${cb} = min(cq${cb}, p.nq - 1u);`]));
  const tapAddress = allRows.map(({ s }) => {
    const [yy, xx] = mode === 'fwd' ? [`y0${s} + kh`, `x0${s} + kw`] : [`y0${s} - (kh - kh0) / p.s`, `x0${s} - (kw - kw0) / p.s`];
    if (v.texA) return lines(4, [
      `let yy${s} = ${yy}; let xx${s} = ${xx};`,
      `let in${s} = yy${s} >= 0 && yy${s} < p.sh && xx${s} >= 0 && xx${s} < p.sw;`,
      `let ty${s} = u32(select(0, nb${s} + yy${s}, in${s})); let tx${s} = u32(select(0, xx${s}, in${s})) * p.kq;`,
    ]);
    return lines(4, [
      `let yy${s} = ${yy}; let xx${s} = ${xx};`,
      `let ab${s} = select(-1, (nb${s} + yy${s}) * p.sw + xx${s}, yy${s} >= 0 && yy${s} < p.sh && xx${s} >= 0 && xx${s} < p.sw);`,
      `let ai${s} = u32(max(ab${s}, 0)) * ${aligned ? 'p.kq' : 'p.ck'};`,
    ]);
  });
  const loadRows = allRows.map(({ s }) => {
    if (v.texA) return `      let av${s} = select(vec4<f32>(0.0), textureLoad(a, vec2<u32>(tx${s} + q, ty${s})), in${s});`;
    if (aligned) return `      let av${s} = select(vec4<f32>(0.0), a[ai${s} + q], ab${s} >= 0);`;
    const ld = (j: number) => `select(0.0, a[ai${s} + min(q * 4u + ${j}u, p.ck - 1u)], ab${s} >= 0 && q * 4u + ${j}u < p.ck)`;
    return `      let av${s} = vec4<f32>(${range(4).map(ld).join(', ')});`;
  });
  // rows past the last channel multiply zeros; clamping keeps their (finite) weight reads in bounds
  const loadCols = range(4).flatMap((kk) => {
    const krow = aligned ? `kb + q * 4u + ${kk}u` : `kb + min(q * 4u + ${kk}u, p.ck - 1u)`;
    return cbs.map((cb) =>
      v.texB
        ? `      let bi${kk}_${cb} = (${krow}) * p.nq + cl${cb}; let b${kk}_${cb} = textureLoad(b, vec2<u32>(bi${kk}_${cb} % ${v.texB}u, bi${kk}_${cb} / ${v.texB}u));`
        : aligned
        ? `      let b${kk}_${cb} = b[(${krow}) * p.nq + cl${cb}];`
        : `      let b${kk}_${cb} = vec4<f32>(${range(4).map((j) => `b[(${krow}) * p.cn + min(cl${cb} * 4u + ${j}u, p.cn - 1u)]`).join(', ')});`,
    );
  });
  const fmas = range(RB).flatMap((rb) =>
    range(laneRows).map((r) =>
      [
        `      { let v = ${shared(rb, r, 'av')};`,
        ...range(4).flatMap((kk) => cbs.map((cb) => `        ${acc(rb, r, cb)} = fma(vec4<f32>(v.${XYZW[kk]}), b${kk}_${cb}, ${acc(rb, r, cb)});`)),
        '      }',
      ].join('\n'),
    ),
  );
  // a lane keeps its column quads; row r's output index comes from the lane that decoded it
  const biases = cbs.map((cb) =>
    aligned
      ? `  let bias${cb} = select(vec4<f32>(0.0), bias[cl${cb}], p.hasBias != 0u);`
      : `  let bias${cb} = select(vec4<f32>(0.0), vec4<f32>(${range(4).map((j) => `bias[min(cl${cb} * 4u + ${j}u, p.cn - 1u)]`).join(', ')}), p.hasBias != 0u);`,
  );
  const stores = range(RB).flatMap((rb) =>
    range(laneRows).map((r) => {
      const body = cbs.flatMap((cb) => {
        const a = acc(rb, r, cb);
        if (aligned) return [`    if (cq${cb} < p.nq) { let e = u32(o) * p.nq + cq${cb}; y[e] = ${act(`${a} + bias${cb}${addend ? ' + addend[e]' : ''}`, 'vec4<f32>(0.0)')}; }`];
        return range(4).map((j) => `    if (cq${cb} * 4u + ${j}u < p.cn) { let e = u32(o) * p.cn + cq${cb} * 4u + ${j}u; y[e] = ${act(`${a}.${XYZW[j]} + bias${cb}.${XYZW[j]}${addend ? ' + addend[e]' : ''}`, '0.0')}; }`);
      });
      return [`  { let o = ${shared(rb, r, 'o')}; if (o >= 0) {`, ...body, '  } }'].join('\n');
    }),
  );
  // a lane holds RB * laneRows rows of its column quads: their mean, then the squared deviations from it (two
  // passes over registers, no cancellation). Narrow layers split a tile's rows between the RG lane groups: they
  // merge pairwise by subgroupShuffleXor (Chan et al., equal counts), so every block is one row tile.
  const laneBlock = RB * laneRows;
  const merges: string[] = [];
  for (let step = GQ, n = laneBlock; GQ && step < SG; step *= 2, n *= 2) {
    merges.push(`    { let om = subgroupShuffleXor(mean, ${step}u); let d = om - mean; m2 = fma(d * d, vec4<f32>(${n / 2}.0), m2 + subgroupShuffleXor(m2, ${step}u)); mean = (mean + om) * 0.5; }`);
  }
  const momentStores = !moments ? [] : cbs.map((cb) => {
    const vals = range(RB).flatMap((rb) => range(laneRows).map((r) => `(${acc(rb, r, cb)} + bias${cb})`));
    const guard = GQ ? 'g == 0u && ' : '';
    const store = aligned
      ? `    if (${guard}cq${cb} < p.nq) { mom[2u * rowTile * p.nq + cq${cb}] = mean; mom[(2u * rowTile + 1u) * p.nq + cq${cb}] = m2; }`
      : range(4).map((j) => `    if (${guard}cq${cb} * 4u + ${j}u < p.cn) { mom[2u * rowTile * p.cn + cq${cb} * 4u + ${j}u] = mean.${XYZW[j]}; mom[(2u * rowTile + 1u) * p.cn + cq${cb} * 4u + ${j}u] = m2.${XYZW[j]}; }`).join('\n');
    return [
      '  {',
      `    var mean = (${vals.join(' + ')}) / ${laneBlock}.0;`,
      '    var m2 = vec4<f32>(0.0);',
      ...vals.map((x) => `    { let d = ${x} - mean; m2 = fma(d, d, m2); }`),
      ...merges,
      store,
      '  }',
    ].join('\n');
  });

  // batchNorm's backward sums: a lane adds up its rows of its column quads (padding rows count 0), the narrow
  // layout's lane groups are added by subgroupShuffleXor, and the tile's sums are stored as one partial row pair
  if (v.bnSums && (mode !== 'dx' || !aligned || moments)) throw new Error('conv2d: batchNorm sums are a dx epilogue of aligned layers');
  const bnSumStores = !v.bnSums ? [] : cbs.map((cb) => {
    const rowTerms = range(RB).flatMap((rb) => range(laneRows).map((r) => {
      const mask = `${v.bnRelu ? '(xm * scale + bb > vec4<f32>(0.0)) & ' : ''}vec4<bool>(o >= 0)`;
      return lines(4, [
        `{ let o = ${shared(rb, r, 'o')}; let e = u32(max(o, 0)) * p.nq + cl${cb};`,
        `  let xm = (bx[e] - shift) - dmean;`,
        `  let gv = select(vec4<f32>(0.0), ${acc(rb, r, cb)}${addend ? ' + addend[e]' : ''}, ${mask});`,
        '  sa += gv; sb += gv * xm; }',
      ]);
    }));
    const merge = [];
    for (let step = GQ; GQ && step < SG; step *= 2) merge.push(`    sa += subgroupShuffleXor(sa, ${step}u); sb += subgroupShuffleXor(sb, ${step}u);`);
    return [
      '  {',
      '    let s0 = 4u * ((rowTile * ' + `${SG * RB}u) / p.grp) * p.nq;`,
      `    let shift = bst[s0 + cl${cb}]; let dmean = bst[s0 + p.nq + cl${cb}];`,
      ...(v.bnRelu ? [`    let scale = bst[s0 + 3u * p.nq + cl${cb}]; let bb = bbeta[cl${cb}];`] : []),
      '    var sa = vec4<f32>(0.0); var sb = vec4<f32>(0.0);',
      ...rowTerms,
      ...merge,
      `    if (${GQ ? 'g == 0u && ' : ''}cq${cb} < p.nq) { part[2u * rowTile * p.nq + cq${cb}] = sa; part[(2u * rowTile + 1u) * p.nq + cq${cb}] = sb; }`,
      '  }',
    ].join('\n');
  });
  const bnBindings: Record<string, BindingDecl> = !v.bnSums ? {} : { bx: 'read vec4<f32>', bst: 'read vec4<f32>', ...(v.bnRelu ? { bbeta: 'read vec4<f32>' } : {}), part: 'rw vec4<f32>' };

  return {
    name: `conv2d.${mode}`,
    uniforms: v.bnSums ? { ...GEMM_UNIFORMS, grp: 'u32' } : GEMM_UNIFORMS,
    bindings: { ...gemmBindings(aligned, addend, moments), ...bnBindings, ...(v.texA ? { a: 'texture' } : {}), ...(v.texB ? { b: 'texture' } : {}) },
    workgroupSize: SG * L.G,
    enable: L.subgroups ? ['subgroups'] : [],
    body: `
  ${laneTile(L)}
  ${TILE_DECODE}
  ${mode === 'dx' ? PARITY_CLASS : ''}
${decode.join('\n')}
${columns}
  ${range(RB * laneRows * CB).map((i) => `var a_${i} = vec4<f32>(0.0);`).join(' ')}
  ${tapLoops(mode)}
${tapAddress.join('\n')}
    let kb = u32(kh * p.kw + kw) * p.ck;
    for (var q = 0u; q < p.kq; q++) {
${loadRows.join('\n')}
${loadCols.join('\n')}
${fmas.join('\n')}
    }
  }
  }
${biases.join('\n')}
${stores.join('\n')}
${momentStores.join('\n')}
${bnSumStores.join('\n')}`,
  };
}

// ---- 'subgroups' / 'portable': dW, outer products over output pixels ----------------------------------------

export interface LanesDw {
  variant: 'lanes';
  /** Cin and Cout both % 4 == 0: vec4 loads and stores; else scalar loads with checks */
  aligned: boolean;
  RQ: number;
  CB: number;
  U: number;
  lanes: Lanes;
  /**
   * Narrow layers (subgroups only): GQ lanes (a power of two >= the column quads) split the columns and the
   * SG / GQ lane groups split each step's pixels, reading x by subgroupShuffle; the groups' sums are added by
   * subgroupShuffleXor at the end. 0: every lane a column quad, all pixels (wide layers).
   */
  GQ: number;
  /** aligned: read x through an operand texture [N * H rows, W * Cin / 4 texels] */
  texX: boolean;
  /** aligned: read dy through an operand texture [N * OH rows, OW * Cout / 4 texels] */
  texDy: boolean;
}

export function lanesDwDecl(v: LanesDw): KernelDecl {
  const { aligned, RQ, CB, U, lanes: L, GQ } = v;
  const SG = L.SG;
  const PP = SG / RQ; // pixels per step
  const G = GQ ? SG / GQ : 1; // lane groups, each taking every G-th pixel of a step
  if (PP % G) throw new Error(`conv2d: dW's narrow split needs whole pixels per lane group (SG ${SG}, RQ ${RQ}, GQ ${GQ})`);
  const cbs = range(CB);
  // the (row quad, pixel offset) pairs a lane loads: its own with subgroups, all of its group's without
  const laneRows = L.subgroups ? [{ s: '', lane: 'l' }] : range(SG).map((r) => ({ s: `_${r}`, lane: `${r}u` }));
  const acc = (rr: number, j: number, cb: number) => `a_${(rr * 4 + j) * CB + cb}`;
  const decode = laneRows.map(({ s, lane }) =>
    lines(2, [
      `let rq${s} = min(rowTile * ${RQ}u + ${lane} % ${RQ}u, p.rqt - 1u);`,
      `let pp${s} = i32(${lane} / ${RQ}u);`,
      `let tap${s} = i32(rq${s} / p.cq);`,
      `let ciq${s} = rq${s} % p.cq;`,
      `let ky${s} = tap${s} / p.kw - p.pad;`,
      `let kx${s} = tap${s} % p.kw - p.pad;`,
    ]),
  );
  const lineRows = laneRows.map(({ s }) => lines(4, [
    `let yy${s} = oh * p.s + ky${s};`,
    `let rowOk${s} = yy${s} >= 0 && yy${s} < p.H;`,
    v.texX ? `let trow${s} = u32(select(0, n * p.H + yy${s}, rowOk${s}));` : `let xrow${s} = (n * p.H + yy${s}) * p.W;`,
  ]));
  // One iteration covers U pixel steps. Every operand of the U steps is fetched first, then each accumulator takes
  // its U * (pixels per lane group) products in a row: on lavapipe a texel fetch is a call, which spills every live
  // register, and an accumulator updated in a loop is loaded, masked and stored once per iteration, so the products
  // per accumulator between fetches are what amortizes both.
  const loadsOf = (u: number) => {
    const loads = laneRows.map(({ s }) =>
      lines(4, [
        `let ow${s}_${u} = i32(ow0) + ${u * PP} + pp${s};`,
        `let xx${s}_${u} = ow${s}_${u} * p.s + kx${s};`,
        `let ok${s}_${u} = rowOk${s} && ow${s}_${u} < i32(p.OW) && xx${s}_${u} >= 0 && xx${s}_${u} < p.W;`,
        ...(v.texX
          ? [`let av${s}_${u} = select(vec4<f32>(0.0), textureLoad(x, vec2<u32>(u32(select(0, xx${s}_${u}, ok${s}_${u})) * p.cq + ciq${s}, trow${s})), ok${s}_${u});`]
          : [`let xi${s}_${u} = u32(max(xrow${s} + xx${s}_${u}, 0));`]),
        v.texX ? false : aligned
          ? `let av${s}_${u} = select(vec4<f32>(0.0), x[xi${s}_${u} * p.cq + ciq${s}], ok${s}_${u});`
          : `let av${s}_${u} = vec4<f32>(${range(4).map((j) => `select(0.0, x[xi${s}_${u} * p.cin + min(ciq${s} * 4u + ${j}u, p.cin - 1u)], ok${s}_${u} && ciq${s} * 4u + ${j}u < p.cin)`).join(', ')});`,
      ]),
    );
    // a pixel past the row end has x = 0 in every lane that pairs with it; clamping keeps dy reads in bounds
    // the pixels of this lane's group: q-th of the step is pixel q * G + grp
    const pixel = (q: number) => (G > 1 ? `ow0 + ${u * PP}u + ${q * G}u + grp` : `ow0 + ${u * PP + q}u`);
    const dys = range(PP / G).map((q) =>
      lines(4, [
        v.texDy ? `let px${q}_${u} = min(${pixel(q)}, p.OW - 1u) * p.nq;` : `let pix${q}_${u} = dyrow + min(${pixel(q)}, p.OW - 1u);`,
        ...cbs.map((cb) =>
          v.texDy
            ? `let b${q}_${cb}_${u} = textureLoad(dy, vec2<u32>(px${q}_${u} + cl${cb}, line));`
            : aligned
            ? `let b${q}_${cb}_${u} = dy[pix${q}_${u} * p.nq + cl${cb}];`
            : `let b${q}_${cb}_${u} = vec4<f32>(${range(4).map((j) => `dy[pix${q}_${u} * p.cout + min(cl${cb} * 4u + ${j}u, p.cout - 1u)]`).join(', ')});`,
        ),
      ]),
    );
    // row r of the step: pixel q = r / RQ, row quad rr = r % RQ, read from the lane that loaded it
    const rows = range(SG / G).map((r) => {
      const q = Math.floor(r / RQ);
      const rr = r % RQ;
      const src = G > 1 ? `subgroupShuffle(av_${u}, (${q * G}u + grp) * ${RQ}u + ${rr}u)` : L.subgroups ? `subgroupBroadcast(av_${u}, ${r}u)` : `av_${r}_${u}`;
      return `    let v${r}_${u} = ${src};`;
    });
    return [...loads, ...dys, ...rows];
  };
  const products = range(RQ).flatMap((rr) =>
    range(4).flatMap((j) =>
      cbs.map((cb) => {
        const terms = range(U).flatMap((u) => range(SG / G / RQ).map((q) => `fma(vec4<f32>(v${q * RQ + rr}_${u}.${XYZW[j]}), b${q}_${cb}_${u}, `)).reverse();
        return `    ${acc(rr, j, cb)} = ${terms.join('')}${acc(rr, j, cb)}${')'.repeat(terms.length)};`;
      }),
    ),
  );
  const iteration = [...range(U).flatMap(loadsOf), ...products].join('\n');
  // the lane groups' sums of the same column quad, added pairwise
  const merge: string[] = [];
  for (let step = GQ; G > 1 && step < SG; step *= 2) {
    for (let i = 0; i < RQ * 4 * CB; i++) merge.push(`  a_${i} += subgroupShuffleXor(a_${i}, ${step}u);`);
  }
  // partial sums of this chunk: out[chunk][(kh, kw, ci)][co]
  const stores = range(RQ).map((rr) =>
    [
      `  { let rq = rowTile * ${RQ}u + ${rr}u; if (${G > 1 ? 'grp == 0u && ' : ''}rq < p.rqt) {`,
      `    let base = chunk * (p.wsize / p.cout) + (rq / p.cq) * p.cin;`,
      `    let ci0 = (rq % p.cq) * 4u;`,
      ...range(4).flatMap((j) => [
        `    if (ci0 + ${j}u < p.cin) {`,
        `      let row = base + ci0 + ${j}u;`,
        ...cbs.flatMap((cb) => {
          const a = acc(rr, j, cb);
          if (aligned) return [`      if (cq${cb} < p.nq) { out[row * p.nq + cq${cb}] = ${a}; }`];
          return range(4).map((k) => `      if (cq${cb} * 4u + ${k}u < p.cout) { out[row * p.cout + cq${cb} * 4u + ${k}u] = ${a}.${XYZW[k]}; }`);
        }),
        '    }',
      ]),
      '  } }',
    ].join('\n'),
  );
  return {
    name: 'conv2d.dW',
    uniforms: DW_UNIFORMS,
    bindings: { ...dwBindings(aligned), ...(v.texX ? { x: 'texture' } : {}), ...(v.texDy ? { dy: 'texture' } : {}) },
    workgroupSize: SG * L.G,
    enable: L.subgroups ? ['subgroups'] : [],
    body: `
  ${laneTile(L)}
  ${TILE_DECODE}
  let chunk = rt / p.rowTiles;
${decode.join('\n')}
${G > 1
    ? lines(2, ['let cq0 = l % ' + GQ + 'u;', 'let cl0 = min(cq0, p.nq - 1u);', 'let grp = l / ' + GQ + 'u;'])
    : lines(2, cbs.flatMap((cb) => [`let cq${cb} = colTile * ${SG * CB}u + ${cb * SG}u + l;`, `let cl${cb} = min(cq${cb}, p.nq - 1u);`]))}
  ${range(RQ * 4 * CB).map((i) => `var a_${i} = vec4<f32>(0.0);`).join(' ')}
  // this chunk's output lines (n, oh); perChunk counts lines here
  let L0 = chunk * p.perChunk;
  let L1 = min(L0 + p.perChunk, p.total);
  for (var line = L0; line < L1; line++) {
    let n = i32(line / p.OH);
    let oh = i32(line % p.OH);
    let dyrow = line * p.OW;
${lineRows.join('\n')}
    for (var ow0 = 0u; ow0 < p.OW; ow0 += ${PP * U}u) {
${iteration}
    }
  }
${merge.join('\n')}
${stores.join('\n')}`,
  };
}
