// What lavapipe makes of a conv2d kernel: runs one conv direction in a child process with GALLIVM_DEBUG=asm (and
// the shader cache off, so every pipeline is compiled), then summarizes the x86 loops of each compiled compute
// pipeline: instructions per iteration, vector multiplies and adds (WGSL fma becomes one of each on llvmpipe),
// execution-mask blends, 256-bit moves to and from the stack (spills) and calls (texel fetches are out-of-line
// calls, which spill every live vector register). Instructions per multiply-add is the figure to compare between
// tunings; timing stays with bench/conv-ab.ts. Not a test. lavapipe only.
// Usage: npx tsx bench/lavapipe-asm.ts fwd|dx|dW N,H,C ['ConvTuningOverrides JSON']   (3x3, stride 1, Cin = Cout = C)
//   e.g. npx tsx bench/lavapipe-asm.ts dW 128,4,128 '{"tiles":{"U":1}}'

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const [mode = 'fwd', dims = '128,4,128', json = '{}'] = process.argv.slice(2).filter((a) => a !== '--child');
if (!['fwd', 'dx', 'dW'].includes(mode)) throw new Error(`lavapipe-asm: direction must be fwd, dx or dW, got '${mode}'`);

if (process.argv.includes('--child')) {
  const { getDevice, releaseDevice, sync } = await import('../nn/index.ts');
  const { convLayer } = await import('./cases/conv-layer.ts');
  const [N, H, C] = dims.split(',').map(Number);
  await getDevice();
  const layer = convLayer(N, H, C, (i) => ((i * 7919) % 997) / 997 - 0.5);
  layer.ops[mode as 'fwd' | 'dx' | 'dW'](JSON.parse(json)).dispose();
  await sync();
  layer.dispose();
  releaseDevice();
  process.exit(0);
}

const child = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), mode, dims, json, '--child'], {
  env: { ...process.env, GALLIVM_DEBUG: 'asm', MESA_SHADER_CACHE_DISABLE: 'true' },
  encoding: 'utf8',
  maxBuffer: 1 << 30,
});
if (child.status !== 0) throw new Error(`lavapipe-asm: the child run failed (status ${child.status}):\n${child.stderr.slice(-2000)}`);
const text = child.stdout + child.stderr;

interface Ins { addr: number; op: string; arg: string }
const parse = (lines: string[]): Ins[] =>
  lines.flatMap((l) => {
    const m = /^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$/.exec(l);
    return m ? [{ addr: parseInt(m[1], 16), op: m[2], arg: m[3] }] : [];
  });

// each compute pipeline is printed as a coroutine body (cs_co_variant) between its other functions
const lines = text.split('\n');
const bodies: Ins[][] = [];
for (let i = 0; i < lines.length; i++) {
  if (!lines[i].startsWith('cs_co_variant:')) continue;
  let j = i + 1;
  while (j < lines.length && !/^\S+:$/.test(lines[j])) j++;
  bodies.push(parse(lines.slice(i + 1, j)));
}
if (!bodies.length) throw new Error('lavapipe-asm: no compute pipeline in the output: is the adapter lavapipe (GALLIVM_DEBUG needs llvmpipe)?');

console.log(`conv2d ${mode} ${dims} ${json}: ${bodies.length} compute pipelines`);
bodies.forEach((ins, k) => {
  console.log(`pipeline ${k}: ${ins.length} instructions`);
  const seen = new Set<string>();
  ins.forEach((b, i) => {
    if (!b.op.startsWith('j') || !/^-?\d+$/.test(b.arg)) return;
    const next = ins[i + 1]?.addr ?? b.addr;
    const target = next + Number(b.arg);
    if (target >= b.addr) return; // forward jump
    const body = ins.filter((x) => x.addr >= target && x.addr <= b.addr);
    const count = (re: RegExp) => body.filter((x) => re.test(x.op)).length;
    const mul = count(/^vmulps$/);
    if (!mul || body.length < 100) return;
    const key = `${body.length}/${mul}`;
    if (seen.has(key)) return;
    seen.add(key);
    const spills = body.filter((x) => /^vmov(ups|aps)$/.test(x.op) && x.arg.includes('(%rsp)')).length;
    console.log(
      `  loop of ${body.length} instructions: ${mul} vmulps, ${count(/^vaddps$/)} vaddps, ${count(/^vblendvps$/)} mask blends, ` +
        `${spills} stack moves, ${count(/^call/)} calls; ${(body.length / mul).toFixed(2)} instructions per multiply-add`,
    );
  });
});
