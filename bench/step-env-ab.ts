// A/B of driver settings that are fixed when a process loads the driver (lavapipe's LP_NUM_THREADS, ...): the whole
// BYOL training step timed in child processes (bench/step-child.ts: median of `--steps` steps after a warm-up)
// under each environment in turn, alternating the order every round so that both see the same machine.
// Not a tuner: it prints the medians and each setting's fastest round against the first setting's.
// Usage: npx tsx bench/step-env-ab.ts [--rounds 3] [--steps 3] [--old] 'LP_NUM_THREADS=2' 'LP_NUM_THREADS=4' ...
//   (each argument: space-separated NAME=VALUE pairs added to this process's environment; '' for none)

import { median } from './harness.ts';
import { timeStepInChild } from './step-child.ts';

const argv = process.argv.slice(2);
const flag = (name: string, def: number) => (argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : def);
const rounds = flag('--rounds', 3);
const steps = flag('--steps', 3);
const settings = argv.filter((a, i) => !a.startsWith('--') && !['--rounds', '--steps'].includes(argv[i - 1]));
if (settings.length < 2) throw new Error("step-env-ab: give at least two settings, e.g. 'LP_NUM_THREADS=2' 'LP_NUM_THREADS=3'");
const envOf = (setting: string): Record<string, string> => {
  const env: Record<string, string> = {};
  for (const pair of setting.split(/\s+/).filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq < 1) throw new Error(`step-env-ab: '${pair}' in '${setting}' is not NAME=VALUE`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
};

const samples = settings.map(() => [] as number[]);
for (let r = 0; r < rounds; r++) {
  const order = settings.map((_, i) => i);
  if (r % 2) order.reverse();
  for (const i of order) {
    const { ms } = timeStepInChild(envOf(settings[i]), { steps, old: argv.includes('--old') }, `step-env-ab under '${settings[i]}'`);
    samples[i].push(ms);
    console.log(`round ${r + 1}: '${settings[i]}' ${ms.toFixed(0)} ms per step`);
  }
}
const first = Math.min(...samples[0]);
for (const [i, s] of settings.entries()) {
  const best = Math.min(...samples[i]);
  console.log(`'${s}': median ${median(samples[i]).toFixed(0)} ms, fastest ${best.toFixed(0)} ms (${(best / first).toFixed(3)} of the first's fastest)`);
}
