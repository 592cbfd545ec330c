// The whole BYOL training step timed in a child process, for settings the driver reads once when it loads
// (LP_NATIVE_VECTOR_WIDTH, LP_NUM_THREADS, ...). timeStepInChild() spawns this file with `--child`; the child
// prints the median ms of `--steps` steps after a warm-up step (bench/cases/byol-step.ts's shape, `--old` for the
// older one) and the subgroup width the adapter reported. Used by bench/lane-width.ts and bench/step-env-ab.ts.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const me = fileURLToPath(import.meta.url);

/** Runs the step in a child process with `env` added to this one's; throws with the child's stderr if it fails. */
export function timeStepInChild(env: Record<string, string>, opts: { steps: number; old: boolean }, what: string): { ms: number; lanes: number | null } {
  const out = spawnSync(process.execPath, ['--import', 'tsx', me, '--child', '--steps', String(opts.steps), ...(opts.old ? ['--old'] : [])], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 15 * 60_000,
  });
  const line = out.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line);
  } catch {
    throw new Error(`${what}: the step failed in its child process (exit ${out.status}): ${out.stderr.slice(-2000)}`);
  }
}

if (process.argv[1] === me && process.argv.includes('--child')) {
  const argv = process.argv.slice(2);
  const steps = argv.includes('--steps') ? Number(argv[argv.indexOf('--steps') + 1]) : 3;
  const { getDevice, sync } = await import('../nn/index.ts');
  const { TRAIN_STEP_SHAPE, OLD_STEP_SHAPE, byolForStep, stepViews } = await import('./cases/byol-step.ts');
  const { median } = await import('./harness.ts');
  const s = argv.includes('--old') ? OLD_STEP_SHAPE : TRAIN_STEP_SHAPE;
  const ctx = await getDevice();
  const [v1, v2] = stepViews(s);
  const model = byolForStep(s);
  model.trainStep(v1, v2).loss.dispose();
  await sync();
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    model.trainStep(v1, v2).loss.dispose();
    await sync();
    times.push(performance.now() - t0);
  }
  const info = ctx.adapter as unknown as { info?: { subgroupMinSize?: number } };
  console.log(JSON.stringify({ ms: median(times), lanes: info.info?.subgroupMinSize ?? null }));
  process.exit(0);
}
