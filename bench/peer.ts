// The peer: TensorFlow.js 4.22 with tfjs-backend-webgpu, on the same adapter as our engine. Two ways to run it:
//
// - 'process' (default): in a child process (bench/peer-worker.ts) with its own Dawn instance and the driver's
//   default settings. Needed on lavapipe: our engine asks lavapipe for 16-wide SIMD on AVX-512 CPUs
//   (engine/lavapipe.ts), a process-wide setting under which tfjs's matmul runs about 2x slower than at the
//   default 8 lanes; each engine is measured as it would run on its own. Samples still alternate with ours, and
//   each side waits for its device to be idle, so the two never overlap.
// - 'same-process': tfjs in this process on the same Dawn instance (the GPU object our engine got from the
//   `webgpu` package), with its own GPUDevice from the same adapter, under our driver settings.
//
// tfjs-backend-webgpu registers itself at import time only if navigator.gpu exists, so navigator must be in
// place before the import. The union package '@tensorflow/tfjs' also registers every gradient (tfjs-core alone
// has none), which rows timing backward ops need.

import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { BenchCase, SideOps } from './case.ts';
import type { Sample, Side } from './harness.ts';
import { localSide } from './harness.ts';
import { setIdleWait, idleWhile } from '../engine/idle-wait.ts';
import { isCpuAdapter } from '../engine/device.ts';

export type Tf = typeof import('@tensorflow/tfjs');

export interface PeerCase {
  side: Side;
  output?: () => Promise<Float32Array>;
  dispose: () => Promise<void>;
}

export interface Peer {
  /** e.g. "TensorFlow.js 4.22.0, tfjs-backend-webgpu" */
  name: string;
  /** where it runs and under which driver settings */
  where: string;
  /** Builds case `index` of `cases` on the peer; null where the case has no peer op. */
  setup: (index: number, c: BenchCase, budgetMs?: number) => Promise<PeerCase | null>;
  /** CPU ms used so far by a peer process of its own (0 in this process), for the foreign-CPU accounting */
  ownCpuMs: () => number;
  close: () => void;
}

function exposeNavigatorGpu(gpu: GPU): void {
  const g = globalThis as any;
  if (g.navigator) {
    if (g.navigator.gpu !== gpu) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
  } else {
    Object.defineProperty(g, 'navigator', { value: { gpu }, configurable: true, writable: true });
  }
}

/** Imports tfjs onto `gpu` and selects its WebGPU backend; returns tf and a sync for its device. */
export async function loadTfjs(gpu: GPU): Promise<{ tf: Tf; name: string; sync: () => Promise<void> }> {
  exposeNavigatorGpu(gpu);
  // the harness waits for tfjs's device as ours waits for its own: asleep on a CPU adapter (engine/idle-wait.ts)
  const ai: any = (await gpu.requestAdapter())?.info ?? {};
  setIdleWait(isCpuAdapter({ vendor: ai.vendor ?? '', architecture: ai.architecture ?? '', description: ai.description ?? '', isFallback: !!ai.isFallbackAdapter }));
  const tf = (await import('@tensorflow/tfjs')) as unknown as Tf;
  await import('@tensorflow/tfjs-backend-webgpu');
  if (!(await tf.setBackend('webgpu'))) throw new Error('tf.setBackend("webgpu") returned false');
  await tf.ready();
  const backend = tf.backend() as any;
  const sync = async () => {
    // tfjs batches dispatches into its own encoder and submits every few of them; flush the rest
    if (backend.commandEncoder) {
      backend.endComputePassEncoder?.();
      backend.submitQueue();
    }
    await idleWhile(backend.device.queue.onSubmittedWorkDone());
  };
  return { tf, name: `TensorFlow.js ${tf.version.tfjs}, tfjs-backend-webgpu`, sync };
}

/** tfjs in this process, on our Dawn instance. */
export async function peerInProcess(gpu: GPU): Promise<Peer> {
  const { tf, name, sync } = await loadTfjs(gpu);
  return {
    name,
    where: 'this process (same Dawn instance and driver settings as ours)',
    async setup(_index, c, budgetMs) {
      if (!c.peer) return null;
      const ops: SideOps = await c.peer(tf);
      return { side: localSide(ops.op, sync, budgetMs), output: ops.output, dispose: async () => ops.dispose() };
    },
    ownCpuMs: () => 0,
    close: () => {},
  };
}

type Reply = { ok: true; value?: any; cpuMs: number } | { ok: false; error: string };

/**
 * tfjs in a child process started with `env` (pass the environment from before our engine changed the driver
 * settings). Cases are addressed by their index in bench/cases/index.ts, which the child imports too.
 */
export async function peerProcess(env: NodeJS.ProcessEnv): Promise<Peer> {
  const worker = fileURLToPath(new URL('./peer-worker.ts', import.meta.url));
  const child: ChildProcess = fork(worker, [], { env, execArgv: ['--import', 'tsx'], serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let cpuMs = 0;
  let queue = Promise.resolve();
  const ask = (msg: object): Promise<any> => {
    // one request at a time, answered in order
    const p = queue.then(
      () =>
        new Promise<any>((resolve, reject) => {
          const onExit = (code: number | null) => reject(new Error(`peer process exited (${code}) while handling ${JSON.stringify(msg)}`));
          child.once('exit', onExit);
          child.once('message', (r: Reply) => {
            child.off('exit', onExit);
            if (r.ok) {
              cpuMs = r.cpuMs;
              resolve(r.value);
            } else reject(new Error(`peer process: ${r.error}`));
          });
          child.send(msg);
        }),
    );
    queue = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  };
  const hello = await ask({ type: 'init' });
  return {
    name: hello.name,
    where: `a child process (pid ${child.pid}) with its own Dawn instance on the same adapter, lavapipe defaults (${hello.driver})`,
    async setup(index, c, budgetMs) {
      if (!c.peer) return null;
      await ask({ type: 'setup', index });
      return {
        side: { budgetMs, run: (k: number) => ask({ type: 'run', k }) as Promise<Sample> },
        output: () => ask({ type: 'output' }) as Promise<Float32Array>, // null where the case reads nothing back
        dispose: () => ask({ type: 'dispose' }),
      };
    },
    ownCpuMs: () => cpuMs,
    close: () => {
      child.send({ type: 'exit' });
      child.disconnect();
    },
  };
}
