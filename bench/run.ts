// Benchmarks of our kernels side by side with tfjs-backend-webgpu on the same adapter, in one run.
// Usage: npx tsx bench/run.ts [--quick] [--only SUBSTR] [--json FILE] [--peer process|same-process|none] [--no-tune]
//   --quick     fewer, shorter samples, and no rows marked fullOnly (tfjs matmul 2048 takes ~4 s per op)
//   --only S    rows whose "name shape" contains S (e.g. --only mlp, --only 1024)
//   --json F    also write {machine, rows: [{name, shape, ours_ms, peer_ms, gflops, ratio, ...}]} to F
//   --peer      where tfjs runs (bench/peer.ts): 'process' (default; a child process with the driver's default
//               settings), 'same-process' (this process, our Dawn instance and driver settings), or 'none'
//   --no-tune   keep defaultTile() for matmul instead of tuneMatmul()'s choice, and conv2d's default kernels
//               instead of tuneConv()'s choice (the conv rows marked '(tuneConv)' still run that choice)
// Each row: the check (one op of each engine, outputs compared), then samples of k ops back to back + one wait
// for the device, ours and the peer's alternating. Times are wall-clock per op; ratio = peer / ours.

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
const { measureInterleaved, localSide, ForeignCpu, cpuModel, loadAverage, fmtMs, fmtRate, markdownTable } = await import('./harness.ts');
const { normalizedDiff } = await import('./case.ts');
const { peerInProcess, peerProcess } = await import('./peer.ts');
const { allCases } = await import('./cases/index.ts');
const { GpuTimer } = await import('./gpu-timer.ts');
type Peer = import('./peer.ts').Peer;
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
}

function parseArgs(argv: string[]) {
  const o = { quick: false, only: '', json: '', peer: 'process', tune: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') o.quick = true;
    else if (a === '--only') o.only = argv[++i] ?? '';
    else if (a === '--json') o.json = argv[++i] ?? '';
    else if (a === '--peer') o.peer = argv[++i] ?? '';
    else if (a === '--no-peer') o.peer = 'none';
    else if (a === '--no-tune') o.tune = false;
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
  cpu: cpuModel(),
  cores: cpus().length,
  adapter: `${ctx.info.description || ctx.info.vendor} (${ctx.info.architecture}${ctx.info.isFallback ? ', fallback adapter' : ''})`,
  subgroup_size: broadcastLanes() || null,
  lavapipe: lavapipeConfig()?.note ?? 'not configured (adapter created elsewhere)',
  node: process.version,
  peer: peer ? `${peer.name} in ${peer.where}` : 'none',
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
console.log(`Node ${machine.node}; load average before: ${machine.load_before}; ${machine.timing}\n`);

const picked = allCases.map((c, index) => ({ c, index })).filter(({ c }) => (!c.fullOnly || !args.quick) && `${c.name} ${c.shape}`.includes(args.only));
const rows: Row[] = [];
const totalCpu = new ForeignCpu();
const peerCpuAtStart = peer?.ownCpuMs() ?? 0;
for (const { c, index } of picked) {
  const ours = await c.ours();
  const theirs = peer ? await peer.setup(index, c, c.peerBudgetMs) : null;
  const foreign = new ForeignCpu();
  const peerCpu0 = peer?.ownCpuMs() ?? 0;
  let check: number | null = null;
  if (ours.output && theirs?.output) {
    const want = await theirs.output();
    if (want) check = normalizedDiff(await ours.output(), want);
  }
  const sides: Side[] = [localSide(ours.op, sync, undefined, timer)];
  if (theirs) sides.push(theirs.side);
  const [t, p] = await measureInterleaved(sides, {
    targetMs: args.quick ? 100 : 200,
    samples: args.quick ? 3 : 7,
    minSamples: args.quick ? 1 : 2,
    budgetMs: args.quick ? 3000 : 15000,
    warm: check === null, // the check ran each side once already
  });
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
    foreign_cpu_pct: foreign.percent((peer?.ownCpuMs() ?? 0) - peerCpu0),
  };
  rows.push(row);
  ours.dispose();
  await theirs?.dispose();
  await sync();
  pool().trim();
  const rate = rateOf(row);
  console.log(`${c.name} ${c.shape}: ours ${fmtMs(row.ours_ms)} ms (${rate}), peer ${fmtMs(row.peer_ms)} ms` +
    `${row.ratio != null ? `, ratio ${row.ratio.toFixed(1)}x` : ''}${check != null ? `, max diff ${check.toExponential(1)}` : ''}` +
    `${row.foreign_cpu_pct != null ? `, foreign CPU ${row.foreign_cpu_pct.toFixed(0)}%` : ''}`);
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
const overall = totalCpu.percent((peer?.ownCpuMs() ?? 0) - peerCpuAtStart);
console.log(`\n${markdownTable(header, table)}\n`);
console.log(`load average after: ${machine.load_after}; CPU used by other processes over the run: ${overall != null ? `${overall.toFixed(0)}% of one core` : 'unknown'}`);
const bad = rows.filter((r) => r.check != null && !(r.check <= 1e-4));
if (bad.length) console.log(`OUTPUTS DIFFER from the peer's (normalized max difference > 1e-4): ${bad.map((r) => `${r.name} ${r.shape}`).join('; ')}`);
if (args.json) {
  writeFileSync(args.json, JSON.stringify({ machine: { ...machine, foreign_cpu_pct: overall }, rows }, null, 2) + '\n');
  console.log(`wrote ${args.json}`);
}
peer?.close();
timer?.destroy();
releaseDevice();
// tfjs (same-process mode) holds its own device and with it the Dawn instance, which would keep Node alive
process.exit(bad.length ? 1 : 0);
