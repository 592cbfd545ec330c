// Benchmarks of our kernels side by side with tfjs-backend-webgpu, in one process on one adapter.
// Usage: npx tsx bench/run.ts [--quick] [--only SUBSTR] [--json FILE] [--no-peer] [--no-tune]
//   --quick     fewer, shorter samples, and no rows marked fullOnly (tfjs matmul 2048 takes ~4 s per op)
//   --only S    rows whose "name shape" contains S (e.g. --only 'mlp', --only 1024)
//   --json F    also write {machine, rows: [{name, shape, ours_ms, peer_ms, gflops, ratio, ...}]} to F
//   --no-peer   our engine only;  --no-tune  keep the default matmul tile instead of tuneMatmul()'s choice
// Each row: warm-up (compiles pipelines), a check that our output matches the peer's, then samples of k ops
// back to back + one sync, ours and the peer's interleaved. Times are wall-clock per op; ratio = peer / ours.

import { writeFileSync } from 'node:fs';
import { getDevice, releaseDevice, sync, pool } from '../engine/index.ts';
import { _gpuHandle } from '../engine/device.ts';
import { tuneMatmul } from '../engine/tune.ts';
import { broadcastLanes } from '../kernels/matmul.ts';
import { lavapipeConfig } from '../engine/lavapipe.ts';
import { measureInterleaved, ForeignCpu, cpuModel, loadAverage, fmtMs, fmtRate, markdownTable, type Side, type Timing } from './harness.ts';
import { loadPeer } from './peer.ts';
import { allCases } from './cases/index.ts';

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
  /** peer_ms / ours_ms: how many times faster we are */
  ratio: number | null;
  /** the same ratio from CPU time per op (whole process), which other processes' load disturbs less */
  ratio_cpu: number | null;
  ours_cpu_ms: number;
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
  const o = { quick: false, only: '', json: '', peer: true, tune: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') o.quick = true;
    else if (a === '--only') o.only = argv[++i] ?? '';
    else if (a === '--json') o.json = argv[++i] ?? '';
    else if (a === '--no-peer') o.peer = false;
    else if (a === '--no-tune') o.tune = false;
    else throw new Error(`bench: unknown argument ${a} (see the header of bench/run.ts)`);
  }
  return o;
}

const args = parseArgs(process.argv.slice(2));
const ctx = await getDevice();
const gpuObject = _gpuHandle;
const peer = args.peer && gpuObject ? await loadPeer(gpuObject) : null;

let tuneNote = 'default tile (--no-tune)';
if (args.tune) {
  const r = await tuneMatmul();
  tuneNote = `tuneMatmul() chose ${r.choice.name} (${r.source}${r.source === 'measured' ? `, ${r.ms.toFixed(0)} ms` : ''})`;
}

const machine = {
  cpu: cpuModel(),
  cores: (await import('node:os')).cpus().length,
  adapter: `${ctx.info.description || ctx.info.vendor} (${ctx.info.architecture}${ctx.info.isFallback ? ', fallback adapter' : ''})`,
  subgroup_size: broadcastLanes() || null,
  lavapipe: lavapipeConfig()?.note ?? 'not configured (browser or adapter created elsewhere)',
  node: process.version,
  peer: peer?.name ?? 'none',
  matmul: tuneNote,
  timing: 'wall-clock per op: k ops recorded back to back, then one wait for the queue (not GPU timestamps)',
  load_before: loadAverage(),
  load_after: '',
  date: new Date().toISOString(),
};
console.log(`# byol-webgpu benchmarks${args.quick ? ' (quick)' : ''}`);
console.log(`CPU: ${machine.cpu}, ${machine.cores} cores; adapter: ${machine.adapter}; subgroup size ${machine.subgroup_size ?? 'n/a'}`);
console.log(`lavapipe: ${machine.lavapipe} (applies to both engines: one process, one driver)`);
console.log(`Node ${machine.node}; peer: ${machine.peer} on the same Dawn instance and adapter; matmul: ${machine.matmul}`);
console.log(`load average before: ${machine.load_before}; ${machine.timing}\n`);

const cases = allCases.filter((c) => (!c.fullOnly || !args.quick) && `${c.name} ${c.shape}`.includes(args.only));
const rows: Row[] = [];
const totalCpu = new ForeignCpu();
for (const c of cases) {
  const ops = await c.setup(peer?.tf ?? null);
  const foreign = new ForeignCpu();
  let check: number | null = null;
  if (ops.check) check = await ops.check();
  const sides: Side[] = [{ op: ops.ours, sync }];
  if (peer && ops.peer) sides.push({ op: ops.peer, sync: peer.sync, budgetMs: c.peerBudgetMs });
  const timings: Timing[] = await measureInterleaved(sides, {
    targetMs: args.quick ? 100 : 200,
    samples: args.quick ? 3 : 7,
    minSamples: args.quick ? 1 : 2,
    budgetMs: args.quick ? 3000 : 15000,
    warm: !ops.check, // the check ran each side once already
  });
  const [ours, theirs] = timings;
  const row: Row = {
    name: c.name,
    shape: c.shape,
    ours_ms: ours.medianMs,
    ours_min_ms: ours.minMs,
    peer_ms: theirs?.medianMs ?? null,
    peer_min_ms: theirs?.minMs ?? null,
    gflops: c.flops ? c.flops / ours.medianMs / 1e6 : null,
    peer_gflops: c.flops && theirs ? c.flops / theirs.medianMs / 1e6 : null,
    gbps: c.bytes ? c.bytes / ours.medianMs / 1e6 : null,
    ratio: theirs ? theirs.medianMs / ours.medianMs : null,
    ratio_cpu: theirs ? theirs.cpuMs / ours.cpuMs : null,
    ours_cpu_ms: ours.cpuMs,
    peer_cpu_ms: theirs?.cpuMs ?? null,
    check,
    ours_k: ours.k,
    peer_k: theirs?.k ?? null,
    samples: [ours.samples, theirs?.samples ?? null],
    first_ms: [ours.firstMs, theirs?.firstMs ?? null],
    foreign_cpu_pct: foreign.percent(),
  };
  rows.push(row);
  ops.dispose();
  await sync();
  pool().trim();
  const rate = row.gflops != null ? `${fmtRate(row.gflops)} GFLOPS` : row.gbps != null ? `${fmtRate(row.gbps)} GB/s` : '';
  console.log(`${c.name} ${c.shape}: ours ${fmtMs(row.ours_ms)} ms (${rate}), peer ${fmtMs(row.peer_ms)} ms` +
    `${row.ratio != null ? `, ratio ${row.ratio.toFixed(1)}x` : ''}${check != null ? `, max diff ${check.toExponential(1)}` : ''}` +
    `${row.foreign_cpu_pct != null ? `, foreign CPU ${row.foreign_cpu_pct.toFixed(0)}%` : ''}`);
}
machine.load_after = loadAverage();

const header = ['op', 'shape', 'ours ms (median / min)', 'GFLOPS or GB/s', 'tfjs-webgpu ms (median / min)', 'tfjs GFLOPS', 'ratio', 'ratio (CPU time)', 'max diff', 'foreign CPU %'];
const table = rows.map((r) => [
  r.name,
  r.shape,
  `${fmtMs(r.ours_ms)} / ${fmtMs(r.ours_min_ms)}`,
  r.gflops != null ? fmtRate(r.gflops) : r.gbps != null ? `${fmtRate(r.gbps)} GB/s` : '-',
  r.peer_ms != null ? `${fmtMs(r.peer_ms)} / ${fmtMs(r.peer_min_ms)}` : '-',
  fmtRate(r.peer_gflops),
  r.ratio != null ? `${r.ratio.toFixed(1)}x` : '-',
  r.ratio_cpu != null ? `${r.ratio_cpu.toFixed(1)}x` : '-',
  r.check != null ? r.check.toExponential(1) : '-',
  r.foreign_cpu_pct != null ? r.foreign_cpu_pct.toFixed(0) : '-',
]);
const overall = totalCpu.percent();
console.log(`\n${markdownTable(header, table)}\n`);
console.log(`load average after: ${machine.load_after}; CPU used by other processes over the run: ${overall != null ? `${overall.toFixed(0)}% of one core` : 'unknown'}`);
if (args.json) {
  writeFileSync(args.json, JSON.stringify({ machine: { ...machine, foreign_cpu_pct: overall }, rows }, null, 2) + '\n');
  console.log(`wrote ${args.json}`);
}
releaseDevice();
// tfjs holds its own device (and with it the Dawn instance), which would keep Node alive
process.exit(0);
