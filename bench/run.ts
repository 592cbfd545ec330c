// Benchmarks of our kernels side by side with tfjs-backend-webgpu on the same adapter, in one run.
// Usage: npx tsx bench/run.ts [--quick] [--only SUBSTR] [--json FILE] [--peer process|same-process|none] [--no-torch] [--no-tune]
//   --quick     fewer, shorter samples, and no rows marked fullOnly (tfjs matmul 2048 takes ~4 s per op)
//   --only S    rows whose "name shape" contains S (e.g. --only mlp, --only 1024)
//   --json F    also write {machine, rows: [{name, shape, ours_ms, peer_ms, gflops, ratio, ...}]} to F
//   --peer      where tfjs runs (bench/peer.ts): 'process' (default; a child process with the driver's default
//               settings), 'same-process' (this process, our Dawn instance and driver settings), or 'none'
//   --no-torch  leave out the PyTorch peer (bench/peer-torch.ts) of the BYOL step rows
//   --no-tune   keep defaultTile() for matmul instead of tuneMatmul()'s choice, and conv2d's default kernels
//               instead of tuneConv()'s choice (the conv rows marked '(tuneConv)' still run that choice)
// Each row: the check (one op of each engine, outputs compared), then samples of k ops back to back + one wait
// for the device, ours and the peers' alternating. Times are wall-clock per op; ratio = peer / ours.
// Rows with a `torch` spec (the BYOL steps) also run in PyTorch on the CPU (ratio_torch = torch / ours), and print
// their model FLOP rate beside our matmul 1024³ rate of the same run, and our dispatches per step and the host's time to record one.

import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';

// the environment before our engine sets driver options, for a peer process that should run with defaults (also
// when the user opted our engine into 16-wide lavapipe, which would slow tfjs ~2x: each runs as it would alone)
const originalEnv = { ...process.env };
delete originalEnv.LP_NATIVE_VECTOR_WIDTH;

const { getDevice, releaseDevice, sync, pool } = await import('../nn/index.ts');
const deviceModule = await import('../engine/device.ts'); // its _gpuHandle is a live binding, set by getDevice()
const { tuneMatmul } = await import('../kernels/matmul-tune.ts');
const { tuneConv } = await import('../kernels/conv2d-tune.ts');
const { broadcastLanes } = await import('../kernels/matmul.ts');
const { lavapipeConfig } = await import('../engine/lavapipe.ts');
const { measureInterleaved, localSide, ForeignCpu, cpuModel, loadAverage, fmtMs, fmtRate, markdownTable, median } = await import('./harness.ts');
const { normalizedDiff } = await import('./case.ts');
const { peerInProcess, peerProcess } = await import('./peer.ts');
const { torchPeer } = await import('./peer-torch.ts');
const { recorderStats } = await import('../engine/recorder.ts');
const { allCases } = await import('./cases/index.ts');
const { GpuTimer } = await import('./gpu-timer.ts');
type Peer = import('./peer.ts').Peer;
type TorchPeer = import('./peer-torch.ts').TorchPeer;
type Side = import('./harness.ts').Side;

interface Row {
  name: string;
  shape: string;
  ours_ms: number;
  ours_min_ms: number;
  peer_ms: number | null;
  peer_min_ms: number | null;
  /** GFLOPS of ours (median time); null for memory-bound rows */
  gflops: number | null;
  peer_gflops: number | null;
  /** GB/s of ours, for memory-bound rows */
  gbps: number | null;
  /** images/s of ours and the peer, for training-step rows */
  images_per_s: number | null;
  peer_images_per_s: number | null;
  /** peer_ms / ours_ms: how many times faster we are */
  ratio: number | null;
  /** the same ratio from CPU time per op, which other processes' load disturbs less */
  ratio_cpu: number | null;
  ours_cpu_ms: number;
  /** GPU time per op of ours from timestamp queries (median), where the adapter has them */
  ours_gpu_ms: number | null;
  peer_cpu_ms: number | null;
  /** normalized max difference between our output and the peer's */
  check: number | null;
  ours_k: number;
  peer_k: number | null;
  samples: [number, number | null];
  first_ms: [number, number | null];
  /** CPU used by other processes during the row, % of one core */
  foreign_cpu_pct: number | null;
  /** our dispatches per op (recorderStats().dispatches over one op) */
  dispatches: number;
  /** host ms to record (and submit) one op of ours, until it returns: a device faster than this waits on the host */
  ours_record_ms: number;
  /** PyTorch peer (step rows): ms per op (median, min), CPU ms per op, images/s, the configuration it chose */
  torch_ms: number | null;
  torch_min_ms: number | null;
  torch_cpu_ms: number | null;
  torch_images_per_s: number | null;
  torch_format: string | null;
  /** median ms per step of each PyTorch configuration tried before the row (memory format x OpenMP wait policy) */
  torch_tried_ms: Record<string, number> | null;
  /** torch_ms / ours_ms: >1 means we are faster */
  ratio_torch: number | null;
  ratio_torch_cpu: number | null;
  /** model FLOPs per op counted from the layer shapes (step rows), and the rate of ours, torch and tfjs */
  model_flops: number | null;
  model_gflops: number | null;
  torch_model_gflops: number | null;
  peer_model_gflops: number | null;
}

function parseArgs(argv: string[]) {
  const o = { quick: false, only: '', json: '', peer: 'process', tune: true, torch: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') o.quick = true;
    else if (a === '--only') o.only = argv[++i] ?? '';
    else if (a === '--json') o.json = argv[++i] ?? '';
    else if (a === '--peer') o.peer = argv[++i] ?? '';
    else if (a === '--no-peer') o.peer = 'none';
    else if (a === '--no-tune') o.tune = false;
    else if (a === '--no-torch') o.torch = false;
    else throw new Error(`bench: unknown argument ${a} (see the header of bench/run.ts)`);
  }
  if (!['process', 'same-process', 'none'].includes(o.peer)) throw new Error(`bench: --peer must be process, same-process or none, got ${o.peer}`);
  return o;
}

const args = parseArgs(process.argv.slice(2));
const ctx = await getDevice();
let peer: Peer | null = null;
try {
  if (args.peer === 'process') peer = await peerProcess(originalEnv);
  else if (args.peer === 'same-process') {
    const gpu = deviceModule._gpuHandle;
    if (!gpu) throw new Error('no Dawn instance to share (the device was not created through the webgpu package)');
    peer = await peerInProcess(gpu);
  }
} catch (e) {
  console.error(`peer: tfjs-backend-webgpu unavailable (${(e as Error).message}); peer columns stay empty`);
}

const picked = allCases.map((c, index) => ({ c, index })).filter(({ c }) => (!c.fullOnly || !args.quick) && `${c.name} ${c.shape}`.includes(args.only));
let torch: TorchPeer | null = null;
let torchNote = args.torch ? 'no row needs it' : 'left out (--no-torch)';
if (args.torch && picked.some(({ c }) => c.torch)) {
  try {
    torch = await torchPeer(originalEnv);
    torchNote = torch.name;
  } catch (e) {
    torchNote = `MISSING: ${(e as Error).message}`;
  }
}

let tuneNote = 'defaultTile() (--no-tune)';
let convNote = 'defaultConvTuning() (--no-tune)';
if (args.tune) {
  const r = await tuneMatmul();
  tuneNote = `tuneMatmul() chose ${r.choice.name} (${r.source}${r.source === 'measured' ? `, ${r.ms.toFixed(0)} ms` : ''})`;
  const c = await tuneConv();
  const times = c.timings.map((t) => `${t.name}: ${t.ms.map((v) => (Number.isFinite(v) ? v.toFixed(0) : '-')).join('/')} ms`).join('; ');
  convNote = `tuneConv() chose ${c.name} (${c.source}${c.source === 'measured' ? `, ${c.ms.toFixed(0)} ms; ${times}` : ''})`;
}

const timer = GpuTimer.create();
const machine = {
  cpu: await cpuModel(),
  cores: cpus().length,
  adapter: `${ctx.info.description || ctx.info.vendor} (${ctx.info.architecture}${ctx.info.isFallback ? ', fallback adapter' : ''})`,
  subgroup_size: broadcastLanes() || null,
  lavapipe: lavapipeConfig()?.note ?? 'not configured (adapter created elsewhere)',
  node: process.version,
  peer: peer ? `${peer.name} in ${peer.where}` : 'none',
  torch_peer: torchNote,
  matmul1024_gflops: null as number | null,
  matmul: tuneNote,
  conv2d: convNote,
  timing: `wall-clock per op: k ops recorded back to back, then one wait for the device${timer ? '; ours also in GPU time from timestamp queries around the k ops' : ''}`,
  load_before: loadAverage(),
  load_after: '',
  date: new Date().toISOString(),
};
console.log(`# byol-webgpu benchmarks${args.quick ? ' (quick)' : ''}`);
console.log(`CPU: ${machine.cpu}, ${machine.cores} cores; adapter: ${machine.adapter}; subgroup size ${machine.subgroup_size ?? 'n/a'}`);
console.log(`ours: ${machine.lavapipe}; matmul: ${machine.matmul}`);
console.log(`conv2d: ${machine.conv2d}`);
console.log(`peer: ${machine.peer}`);
console.log(`torch peer: ${machine.torch_peer}`);
console.log(`Node ${machine.node}; load average before: ${machine.load_before}; ${machine.timing}\n`);

const rows: Row[] = [];
// the step's FLOP rate is read against our matmul 1024³ of the same run: time it alone where its row is not picked
const mm1024 = allCases.find((c) => c.name === 'matmul' && c.flops === 2 * 1024 ** 3);
if (mm1024 && picked.some(({ c }) => c.modelFlops) && !picked.some(({ c }) => c === mm1024)) {
  const ops = await mm1024.ours();
  const [t] = await measureInterleaved([localSide(ops.op, sync)], { targetMs: 200, samples: args.quick ? 3 : 5, minSamples: 2, budgetMs: 3000 });
  ops.dispose();
  machine.matmul1024_gflops = mm1024.flops! / t.medianMs / 1e6;
  console.log(`matmul 1024³ (ours, for the step's FLOP rate): ${fmtMs(t.medianMs)} ms, ${fmtRate(machine.matmul1024_gflops)} GFLOPS`);
}
const totalCpu = new ForeignCpu();
const peerCpuAtStart = peer?.ownCpuMs() ?? 0;
for (const { c, index } of picked) {
  const ours = await c.ours();
  const theirs = peer ? await peer.setup(index, c, c.peerBudgetMs) : null;
  const onTorch = torch && c.torch ? await torch.setup(c.torch, c.peerBudgetMs).catch((e) => {
    console.error(`torch peer: ${c.name} ${c.shape}: ${(e as Error).message}`);
    return null;
  }) : null;
  const foreign = new ForeignCpu();
  const peerCpu0 = (peer?.ownCpuMs() ?? 0) + (torch?.ownCpuMs() ?? 0);
  let check: number | null = null;
  if (ours.output && theirs?.output) {
    const want = await theirs.output();
    if (want) check = normalizedDiff(await ours.output(), want);
  }
  // our dispatches per op (this also warms ours up, as the check would)
  const d0 = recorderStats().dispatches;
  ours.op();
  await sync();
  const dispatches = recorderStats().dispatches - d0;
  // the host's share: recording (and submitting) one op until it returns, median of 3; a GPU faster than this waits
  const recordMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r0 = performance.now();
    ours.op();
    recordMs.push(performance.now() - r0);
    await sync();
  }
  const sides: Side[] = [localSide(ours.op, sync, undefined, timer)];
  if (theirs) sides.push(theirs.side);
  if (onTorch) sides.push(onTorch.side);
  const timings = await measureInterleaved(sides, {
    targetMs: args.quick ? 100 : 200,
    samples: args.quick ? 3 : 7,
    minSamples: args.quick ? 1 : 2,
    budgetMs: args.quick ? 3000 : 15000,
    warm: check === null, // the check ran each side once already
  });
  const t = timings[0];
  const p = theirs ? timings[1] : undefined;
  const q = onTorch ? timings[sides.length - 1] : undefined;
  const row: Row = {
    name: c.name,
    shape: c.shape,
    ours_ms: t.medianMs,
    ours_min_ms: t.minMs,
    peer_ms: p?.medianMs ?? null,
    peer_min_ms: p?.minMs ?? null,
    gflops: c.flops ? c.flops / t.medianMs / 1e6 : null,
    peer_gflops: c.flops && p ? c.flops / p.medianMs / 1e6 : null,
    gbps: c.bytes ? c.bytes / t.medianMs / 1e6 : null,
    images_per_s: c.images ? (c.images * 1000) / t.medianMs : null,
    peer_images_per_s: c.images && p ? (c.images * 1000) / p.medianMs : null,
    ratio: p ? p.medianMs / t.medianMs : null,
    ratio_cpu: p ? p.cpuMs / t.cpuMs : null,
    ours_cpu_ms: t.cpuMs,
    ours_gpu_ms: t.gpuMs,
    peer_cpu_ms: p?.cpuMs ?? null,
    check,
    ours_k: t.k,
    peer_k: p?.k ?? null,
    samples: [t.samples, p?.samples ?? null],
    first_ms: [t.firstMs, p?.firstMs ?? null],
    foreign_cpu_pct: foreign.percent((peer?.ownCpuMs() ?? 0) + (torch?.ownCpuMs() ?? 0) - peerCpu0),
    dispatches,
    ours_record_ms: median(recordMs),
    torch_ms: q?.medianMs ?? null,
    torch_min_ms: q?.minMs ?? null,
    torch_cpu_ms: q?.cpuMs ?? null,
    torch_images_per_s: c.images && q ? (c.images * 1000) / q.medianMs : null,
    torch_format: onTorch?.format ?? null,
    torch_tried_ms: onTorch?.tried ?? null,
    ratio_torch: q ? q.medianMs / t.medianMs : null,
    ratio_torch_cpu: q ? q.cpuMs / t.cpuMs : null,
    model_flops: c.modelFlops ?? null,
    model_gflops: c.modelFlops ? c.modelFlops / t.medianMs / 1e6 : null,
    torch_model_gflops: c.modelFlops && q ? c.modelFlops / q.medianMs / 1e6 : null,
    peer_model_gflops: c.modelFlops && p ? c.modelFlops / p.medianMs / 1e6 : null,
  };
  if (c === mm1024) machine.matmul1024_gflops = row.gflops;
  rows.push(row);
  ours.dispose();
  await theirs?.dispose();
  await onTorch?.dispose();
  await sync();
  pool().trim();
  const rate = rateOf(row);
  console.log(`${c.name} ${c.shape}: ours ${fmtMs(row.ours_ms)} ms (${rate}), peer ${fmtMs(row.peer_ms)} ms` +
    `${row.ratio != null ? `, ratio ${row.ratio.toFixed(1)}x` : ''}${check != null ? `, max diff ${check.toExponential(1)}` : ''}` +
    `${row.foreign_cpu_pct != null ? `, foreign CPU ${row.foreign_cpu_pct.toFixed(0)}%` : ''}`);
  if (c.torch) {
    const torchPart = row.torch_ms != null
      ? `torch ${fmtMs(row.torch_ms)} ms (${fmtRate(row.torch_images_per_s)} img/s, ${row.torch_format}), ours at ${row.ratio_torch!.toFixed(2)}x torch; ` +
        `torch configurations tried (median ms/step): ${Object.entries(row.torch_tried_ms ?? {}).map(([k, v]) => `${k} ${fmtMs(v)}`).join(', ')}`
      : `torch: ${torch ? 'failed (see above)' : torchNote}`;
    console.log(`  ${torchPart}`);
  }
  if (row.model_gflops != null) {
    const mm = machine.matmul1024_gflops;
    console.log(`  model FLOPs ${(row.model_flops! / 1e9).toFixed(2)} G/step (${(row.model_flops! / c.images! / 1e6).toFixed(0)} M/image): ours ${fmtRate(row.model_gflops)} GFLOPS` +
      `${mm != null ? ` = ${((100 * row.model_gflops) / mm).toFixed(0)}% of our matmul 1024³ in this run (${fmtRate(mm)} GFLOPS)` : ''}` +
      `${row.torch_model_gflops != null ? `, torch ${fmtRate(row.torch_model_gflops)}` : ''}${row.peer_model_gflops != null ? `, tfjs ${fmtRate(row.peer_model_gflops)}` : ''}; ${row.dispatches} dispatches/step, recorded by the host in ${row.ours_record_ms.toFixed(1)} ms`);
  }
}
machine.load_after = loadAverage();

function rateOf(r: Row): string {
  if (r.gflops != null) return `${fmtRate(r.gflops)} GFLOPS`;
  if (r.gbps != null) return `${fmtRate(r.gbps)} GB/s`;
  if (r.images_per_s != null) return `${fmtRate(r.images_per_s)} img/s`;
  return '-';
}
function peerRateOf(r: Row): string {
  if (r.peer_gflops != null) return fmtRate(r.peer_gflops);
  if (r.peer_images_per_s != null) return `${fmtRate(r.peer_images_per_s)} img/s`;
  if (r.gbps != null && r.peer_ms != null) return `${fmtRate((r.gbps * r.ours_ms) / r.peer_ms)} GB/s`;
  return '-';
}
const header = ['op', 'shape', 'ours ms (median / min)', 'ours GPU ms', 'GFLOPS, GB/s or img/s', 'tfjs-webgpu ms (median / min)', 'tfjs rate', 'ratio', 'ratio (CPU time)', 'max diff', 'foreign CPU %'];
const table = rows.map((r) => [
  r.name,
  r.shape,
  `${fmtMs(r.ours_ms)} / ${fmtMs(r.ours_min_ms)}`,
  r.ours_gpu_ms != null ? fmtMs(r.ours_gpu_ms) : '-',
  rateOf(r),
  r.peer_ms != null ? `${fmtMs(r.peer_ms)} / ${fmtMs(r.peer_min_ms)}` : '-',
  peerRateOf(r),
  r.ratio != null ? `${r.ratio.toFixed(1)}x` : '-',
  r.ratio_cpu != null ? `${r.ratio_cpu.toFixed(1)}x` : '-',
  r.check != null ? r.check.toExponential(1) : '-',
  r.foreign_cpu_pct != null ? r.foreign_cpu_pct.toFixed(0) : '-',
]);
// the torch columns only where some row has that peer (the BYOL steps); blank on the other rows
if (rows.some((r) => r.torch_ms != null)) {
  header.push('torch ms (median / min)', 'torch img/s', 'ratio torch');
  rows.forEach((r, i) => table[i].push(
    r.torch_ms != null ? `${fmtMs(r.torch_ms)} / ${fmtMs(r.torch_min_ms)}` : '',
    r.torch_images_per_s != null ? fmtRate(r.torch_images_per_s) : '',
    r.ratio_torch != null ? `${r.ratio_torch.toFixed(2)}x` : '',
  ));
}
const overall = totalCpu.percent((peer?.ownCpuMs() ?? 0) + (torch?.ownCpuMs() ?? 0) - peerCpuAtStart);
console.log(`\n${markdownTable(header, table)}\n`);
const steps = rows.filter((r) => r.model_gflops != null);
if (steps.length) {
  const mm = machine.matmul1024_gflops;
  console.log(markdownTable(
    ['step', 'shape', 'ours img/s', 'torch img/s', 'tfjs img/s', 'speed vs torch', 'speed vs tfjs', 'model GFLOPS ours (torch, tfjs)', 'matmul 1024³ GFLOPS', 'dispatches/step'],
    steps.map((r) => [
      r.name,
      r.shape,
      fmtRate(r.images_per_s),
      r.torch_images_per_s != null ? `${fmtRate(r.torch_images_per_s)} (${r.torch_format})` : 'missing',
      fmtRate(r.peer_images_per_s),
      r.ratio_torch != null ? `${r.ratio_torch.toFixed(2)}x` : '-',
      r.ratio != null ? `${r.ratio.toFixed(1)}x` : '-',
      `${fmtRate(r.model_gflops)} (${fmtRate(r.torch_model_gflops)}, ${fmtRate(r.peer_model_gflops)})`,
      fmtRate(mm),
      String(r.dispatches),
    ]),
  ) + '\n');
  if (!steps.some((r) => r.torch_ms != null)) console.log(`torch peer: ${torchNote}`);
}
console.log(`load average after: ${machine.load_after}; CPU used by other processes over the run: ${overall != null ? `${overall.toFixed(0)}% of one core` : 'unknown'}`);
const bad = rows.filter((r) => r.check != null && !(r.check <= 1e-4));
if (bad.length) console.log(`OUTPUTS DIFFER from the peer's (normalized max difference > 1e-4): ${bad.map((r) => `${r.name} ${r.shape}`).join('; ')}`);
if (args.json) {
  writeFileSync(args.json, JSON.stringify({ machine: { ...machine, foreign_cpu_pct: overall }, rows }, null, 2) + '\n');
  console.log(`wrote ${args.json}`);
}
peer?.close();
torch?.close();
timer?.destroy();
releaseDevice();
// tfjs (same-process mode) holds its own device and with it the Dawn instance, which would keep Node alive
process.exit(bad.length ? 1 : 0);
