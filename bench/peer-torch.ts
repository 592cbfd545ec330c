// The PyTorch peer: bench/peer-torch.py in child processes of Debian's /usr/bin/python3 with python3-torch, on the
// CPU at 2 threads. It is the bar for the BYOL step rows (cases with a `torch` spec); it runs nothing else. The
// children get the environment from before our engine changed the driver settings, like the tfjs peer process.
//
// PyTorch gets its best configuration, chosen by measuring: two processes, one with libgomp's default waits (spin a
// while, then sleep) and one with OMP_WAIT_POLICY=PASSIVE (sleep at once), each with the network in NCHW and in
// channels_last. Spinning is fastest on an idle machine; on a loaded one a spinning thread holds its core while its
// partner waits for one, and a step ran 11x slower than with passive waits (8.7 s vs 0.78 s,
// bench/results/step-baseline.md). Samples of the four alternate; the fastest by median keeps running. Not
// OMP_WAIT_POLICY=ACTIVE: its threads spin for seconds after every parallel region, also while the process idles,
// which would take a core from the other engines' samples.
// Its samples alternate with ours and tfjs's (harness.ts measureInterleaved); each side finishes before the next.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Sample, Side } from './harness.ts';
import { median } from './harness.ts';

/** Debian's python3 with python3-torch; BYOL_PYTHON names another (engine/device-check.sh: the GPU machine's). */
export const PYTHON = process.env.BYOL_PYTHON ?? '/usr/bin/python3';
export const TORCH_INSTALL_HINT = "bash engine/setup.sh --bench (as root; Debian's python3-torch, about 1 GB)";
const POLICIES = ['default', 'passive'] as const;
const FORMATS = ['contiguous', 'channels_last'] as const;

export interface TorchCase {
  side: Side;
  /** the configuration that won, e.g. "channels_last, OMP passive" */
  format: string;
  /** median ms per step of each configuration tried */
  tried: Record<string, number>;
  dispose: () => Promise<void>;
}

export interface TorchPeer {
  name: string;
  /** Builds the case in every configuration, times them alternately and keeps the fastest. */
  setup: (spec: Record<string, unknown>, budgetMs?: number) => Promise<TorchCase>;
  /** CPU ms the peer processes used so far, for the foreign-CPU accounting */
  ownCpuMs: () => number;
  close: () => void;
}

interface Proc {
  ask: (msg: object) => Promise<any>;
  cpuMs: () => number;
  close: () => void;
  pid: number | undefined;
}

function startProc(env: NodeJS.ProcessEnv): Proc {
  const script = fileURLToPath(new URL('./peer-torch.py', import.meta.url));
  const child = spawn(PYTHON, [script], { env, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const waiting: ((line: string | null) => void)[] = [];
  lines.on('line', (l) => waiting.shift()?.(l));
  const fail = () => {
    for (const w of waiting.splice(0)) w(null);
  };
  child.on('exit', fail);
  child.on('error', fail);
  let cpuMs = 0;
  let queue: Promise<unknown> = Promise.resolve();
  const ask = (msg: object): Promise<any> => {
    // one request at a time, answered in order
    const p = queue.then(
      () =>
        new Promise<any>((resolve, reject) => {
          waiting.push((line) => {
            if (line === null) return reject(new Error(`torch peer exited while handling ${JSON.stringify(msg)}`));
            const r = JSON.parse(line);
            if (!r.ok) return reject(new Error(r.error));
            cpuMs = r.cpuTotalMs;
            resolve(r.value);
          });
          child.stdin!.write(JSON.stringify(msg) + '\n');
        }),
    );
    queue = p.catch(() => undefined);
    return p;
  };
  return {
    ask,
    cpuMs: () => cpuMs,
    close: () => {
      if (child.exitCode === null) child.stdin!.end(JSON.stringify({ type: 'exit' }) + '\n');
    },
    pid: child.pid,
  };
}

/** Starts the peer; throws with the reason (and the command that installs torch) where it cannot run. */
export async function torchPeer(env: NodeJS.ProcessEnv): Promise<TorchPeer> {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} not found; install python3-torch with ${TORCH_INSTALL_HINT}`);
  const procs = POLICIES.map((policy) => {
    const e = { ...env };
    if (policy === 'passive') e.OMP_WAIT_POLICY = 'PASSIVE';
    else delete e.OMP_WAIT_POLICY;
    return { policy, proc: startProc(e) };
  });
  let hello: { name: string };
  try {
    hello = await procs[0].proc.ask({ type: 'init' });
    await procs[1].proc.ask({ type: 'init' });
  } catch (e) {
    for (const p of procs) p.proc.close();
    throw new Error(`${(e as Error).message}; install it with ${TORCH_INSTALL_HINT}`);
  }
  return {
    name: `${hello.name}, child processes (pids ${procs.map((p) => p.proc.pid).join(', ')}), OpenMP waits default and passive`,
    async setup(spec, budgetMs) {
      // one at a time, so that the two processes never run together
      for (const p of procs) await p.proc.ask({ type: 'setup', case: { ...spec, memoryFormats: FORMATS } });
      const configs = procs.flatMap((p) => FORMATS.map((format) => ({ ...p, format, name: `${format}, OMP ${p.policy}`, ms: [] as number[] })));
      for (let round = 0; round < 3; round++) {
        for (const c of configs) c.ms.push((await c.proc.ask({ type: 'run', k: 1, format: c.format })).ms);
      }
      const tried = Object.fromEntries(configs.map((c) => [c.name, median(c.ms)]));
      const best = configs.reduce((a, b) => (tried[b.name] < tried[a.name] ? b : a));
      for (const p of procs) await (p === procs.find((q) => q.policy === best.policy) ? p.proc.ask({ type: 'select', format: best.format }) : p.proc.ask({ type: 'dispose' }));
      return {
        side: { budgetMs, run: (k: number) => best.proc.ask({ type: 'run', k, format: best.format }) as Promise<Sample> },
        format: best.name,
        tried,
        dispose: () => best.proc.ask({ type: 'dispose' }),
      };
    },
    ownCpuMs: () => procs.reduce((a, p) => a + p.proc.cpuMs(), 0),
    close: () => {
      for (const p of procs) p.proc.close();
    },
  };
}
