// Child process running the peer (tfjs-backend-webgpu) for bench/run.ts, so that tfjs gets its own Dawn
// instance with the driver's default settings (see bench/peer.ts). Requests arrive over IPC one at a time:
//   init → {name, driver}; setup {index} (case index in bench/cases/index.ts); run {k} → {ms, cpuMs} per op;
//   output → Float32Array; dispose; exit.
// Every answer carries this process's CPU time so far, which the parent keeps out of its "foreign CPU".

import { allCases } from './cases/index.ts';
import { loadTfjs, type Tf } from './peer.ts';
import type { SideOps } from './case.ts';

if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = '/tmp';
const webgpu: any = await import('webgpu');
Object.assign(globalThis, webgpu.globals);
const gpu = webgpu.create([]) as GPU;
let tfjs: { tf: Tf; name: string; sync: () => Promise<void> } | null = null;
let current: SideOps | null = null;

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function handle(m: any): Promise<unknown> {
  switch (m.type) {
    case 'init': {
      tfjs = await loadTfjs(gpu);
      return { name: tfjs.name, driver: `LP_NATIVE_VECTOR_WIDTH=${process.env.LP_NATIVE_VECTOR_WIDTH ?? 'unset'}` };
    }
    case 'setup': {
      const c = allCases[m.index];
      if (!c?.peer) throw new Error(`case ${m.index} has no peer op`);
      current = await c.peer(tfjs!.tf);
      return null;
    }
    case 'run': {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let i = 0; i < m.k; i++) current!.op();
      await tfjs!.sync();
      const ms = (performance.now() - t0) / m.k;
      const c = process.cpuUsage(c0);
      return { ms, cpuMs: (c.user + c.system) / 1000 / m.k };
    }
    case 'output':
      return current!.output ? current!.output() : null;
    case 'dispose':
      current?.dispose();
      current = null;
      return null;
    case 'exit':
      process.exit(0);
  }
  throw new Error(`unknown request ${JSON.stringify(m)}`);
}

process.on('message', (m: any) => {
  handle(m).then(
    (value) => process.send!({ ok: true, value, cpuMs: cpuMs() }),
    (e) => process.send!({ ok: false, error: (e as Error).stack ?? String(e) }),
  );
});
process.on('disconnect', () => process.exit(0));
