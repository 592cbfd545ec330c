// `byol train [flags]`: the reference BYOL training run. `byol --help` lists the flags. The installed command
// is byol/bin.ts; `tsx byol/cli.ts` runs this file from the sources.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { releaseDevice } from '../engine/device.ts';
import { train, TRAIN_DEFAULTS, TRAIN_PRESETS, DEFAULT_BASE_LR, type TrainOptions, type TrainPreset } from './train.ts';
import { RESNET_STEMS } from './resnet.ts';

/** The flag of each option a preset sets (for --help). */
const PRESET_FLAGS: Partial<Record<keyof TrainOptions, string>> = { headChannels: 'head-channels', epochs: 'epochs' };
const presetFlags = (name: TrainPreset) =>
  Object.entries(TRAIN_PRESETS[name]).map(([k, v]) => `--${PRESET_FLAGS[k as keyof TrainOptions] ?? k} ${v}`).join(' ');

const HELP = `usage: byol train [flags]
       byol setup [--data] [--browser]

setup checks that Node has a WebGPU adapter; without one, run as root on Debian or Ubuntu, it installs Mesa's
lavapipe (a CPU Vulkan driver). --data also installs Fashion-MNIST (the default data), --browser Chromium.

Trains BYOL on images and reports how good the learned representation is (kNN and linear-probe accuracy on the
test split, against a random-init encoder of the same architecture). Writes to --out: metrics.jsonl,
loss-curve.png, augmentations.png, checkpoints/ (safetensors, atomic), encoder.safetensors (torchvision names
and layouts), config.json and final.json.

preset
  --preset NAME        default, or long (${presetFlags('long')}: the recipe screened toward 0.90
                       linear, hours on 2 CPU cores); flags given beside it override the preset's
data
  --data KIND          fashion-mnist (default; Debian's dataset-fashion-mnist), cifar10, folder
  --data-path PATH     folder of the data set (defaults: /usr/share/datasets/fashion-mnist, data/cifar-10-batches-bin)
model
  --arch ARCH          resnet-small (default), resnet18, resnet34, resnet50
  --width N            channels of the first stage (default ${TRAIN_DEFAULTS.width}; torchvision uses 64)
  --stem KIND          small (3x3 conv, no max-pool; default), small-s2 (the same conv at stride 2: the stages at
                       half the image's resolution, about a quarter of the work) or imagenet (7x7/2 + max-pool)
  --head-channels N    1x1 conv + BN + ReLU to N channels after the last stage, widening the representation
                       (default ${TRAIN_DEFAULTS.headChannels}; 0: none, the plain ResNet)
  --proj-hidden N      projector hidden size (default ${TRAIN_DEFAULTS.projHidden}; paper 4096)
  --proj-dim N         projection size (default ${TRAIN_DEFAULTS.projDim}; paper 256)
  --pred-hidden N      predictor hidden size (default ${TRAIN_DEFAULTS.predHidden}; paper 4096)
augmentation
  --crop-scale LO,HI   random-resized-crop area range (default ${TRAIN_DEFAULTS.cropScale.join(',')}; paper 0.08,1)
  --solarize P         probability of solarizing view 2 (default ${TRAIN_DEFAULTS.solarize}; paper 0.2)
optimization
  --epochs N           passes over the data, may be fractional, e.g. 1.5 (default ${TRAIN_DEFAULTS.epochs})
  --batch N            (default ${TRAIN_DEFAULTS.batchSize})
  --lr X               base learning rate, scaled by batch/256, warm-up then cosine (default: the optimizer's,
                       adam ${DEFAULT_BASE_LR.adam}, sgd ${DEFAULT_BASE_LR.sgd}, lars ${DEFAULT_BASE_LR.lars})
  --optimizer NAME     lars, sgd or adam (default ${TRAIN_DEFAULTS.optimizer})
  --warmup F           fraction of the steps over which the learning rate rises linearly from 0, 0 <= F < 1
                       (default ${TRAIN_DEFAULTS.warmup})
  --wd X               weight decay (default ${TRAIN_DEFAULTS.weightDecay})
  --tau X              EMA base decay, rising to 1 along a cosine (default ${TRAIN_DEFAULTS.tauBase})
  --seed N             (default 0)
run
  --out DIR            output folder (default ${TRAIN_DEFAULTS.out})
  --resume             continue from the newest checkpoint in DIR/checkpoints (bit-identical)
  --max-steps N        stop early after N steps (the schedules still span all epochs)
  --checkpoint-every N (default ${TRAIN_DEFAULTS.checkpointEvery} steps)
  --log-every N        read the loss back every N steps (default ${TRAIN_DEFAULTS.logEvery})
  --no-eval            skip the final evaluation (a folder without a test/ subfolder has nothing to evaluate on)
  --probe KIND         linear probe: lbfgs (default; converged, L2 chosen on 10k held-out train images) or adam
  --probe-epochs N     epochs of the adam probe (default ${TRAIN_DEFAULTS.probeEpochs})
`;

function int(name: string, v: string | undefined, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer >= ${min}, got '${v}'`);
  return n;
}

function num(name: string, v: string | undefined, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name}: expected a number >= ${min}, got '${v}'`);
  return n;
}

/** A number > 0 (epochs may be fractional: the last epoch then covers the first part of its shuffled order). */
function positive(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: expected a number > 0, got '${v}'`);
  return n;
}

function range(name: string, v: string | undefined, dflt: [number, number]): [number, number] {
  if (v === undefined) return dflt;
  const parts = v.split(',').map(Number);
  if (parts.length !== 2 || !(parts[0] > 0 && parts[0] <= parts[1] && parts[1] <= 1)) {
    throw new Error(`--${name}: expected LO,HI with 0 < LO <= HI <= 1, got '${v}'`);
  }
  return [parts[0], parts[1]];
}

function prob(name: string, v: string | undefined, dflt: number): number {
  const p = num(name, v, dflt);
  if (p > 1) throw new Error(`--${name}: expected a probability in [0, 1], got '${v}'`);
  return p;
}

function fraction(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const f = Number(v);
  if (v.trim() === '' || !(f >= 0 && f < 1)) throw new Error(`--${name}: expected a fraction of the steps with 0 <= F < 1, got '${v}'`);
  return f;
}

function oneOf<T extends string>(name: string, v: string | undefined, dflt: T, allowed: readonly T[]): T {
  if (v === undefined) return dflt;
  if (!allowed.includes(v as T)) throw new Error(`--${name}: expected one of ${allowed.join(', ')}, got '${v}'`);
  return v as T;
}

/**
 * `--width -3` as `--width=-3`: parseArgs takes a value that starts with a dash for an option and rejects it as
 * "ambiguous"; joined, the value reaches our own check ("--width: expected an integer >= 1, got '-3'").
 */
function joinDashValues(argv: string[], options: Record<string, { type: 'string' | 'boolean' }>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = argv[i + 1];
    if (a.startsWith('--') && !a.includes('=') && options[a.slice(2)]?.type === 'string' && next?.startsWith('-') && !next.startsWith('--')) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

export function parseTrainArgs(argv: string[]): TrainOptions {
  const options = {
    data: { type: 'string' }, 'data-path': { type: 'string' }, arch: { type: 'string' }, width: { type: 'string' },
    stem: { type: 'string' }, 'head-channels': { type: 'string' }, 'crop-scale': { type: 'string' }, solarize: { type: 'string' },
    'proj-hidden': { type: 'string' }, 'proj-dim': { type: 'string' }, 'pred-hidden': { type: 'string' },
    epochs: { type: 'string' }, batch: { type: 'string' }, lr: { type: 'string' }, optimizer: { type: 'string' }, warmup: { type: 'string' },
    wd: { type: 'string' }, tau: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' },
    resume: { type: 'boolean' }, 'max-steps': { type: 'string' }, 'checkpoint-every': { type: 'string' },
    'log-every': { type: 'string' }, 'no-eval': { type: 'boolean' }, 'probe-epochs': { type: 'string' }, probe: { type: 'string' },
    preset: { type: 'string' },
  } as const;
  const { values: v } = parseArgs({ args: joinDashValues(argv, options), strict: true, options });
  const preset = oneOf('preset', v.preset, 'default', Object.keys(TRAIN_PRESETS) as TrainPreset[]);
  const d: TrainOptions = { ...TRAIN_DEFAULTS, ...TRAIN_PRESETS[preset] };
  const optimizer = oneOf('optimizer', v.optimizer, d.optimizer, ['lars', 'sgd', 'adam'] as const);
  return {
    data: oneOf('data', v.data, d.data, ['fashion-mnist', 'cifar10', 'folder'] as const),
    dataPath: v['data-path'],
    arch: oneOf('arch', v.arch, d.arch, ['resnet-small', 'resnet18', 'resnet34', 'resnet50'] as const),
    width: int('width', v.width, d.width),
    stem: oneOf('stem', v.stem, d.stem, RESNET_STEMS),
    headChannels: int('head-channels', v['head-channels'], d.headChannels, 0),
    cropScale: range('crop-scale', v['crop-scale'], d.cropScale),
    solarize: prob('solarize', v.solarize, d.solarize),
    projHidden: int('proj-hidden', v['proj-hidden'], d.projHidden),
    projDim: int('proj-dim', v['proj-dim'], d.projDim),
    predHidden: int('pred-hidden', v['pred-hidden'], d.predHidden),
    epochs: positive('epochs', v.epochs, d.epochs),
    batchSize: int('batch', v.batch, d.batchSize, 2),
    baseLr: num('lr', v.lr, DEFAULT_BASE_LR[optimizer]),
    optimizer,
    warmup: fraction('warmup', v.warmup, d.warmup),
    weightDecay: num('wd', v.wd, d.weightDecay),
    tauBase: num('tau', v.tau, d.tauBase),
    seed: int('seed', v.seed, d.seed, 0),
    out: v.out ?? d.out,
    resume: !!v.resume,
    maxSteps: v['max-steps'] === undefined ? undefined : int('max-steps', v['max-steps'], 0),
    checkpointEvery: int('checkpoint-every', v['checkpoint-every'], d.checkpointEvery),
    logEvery: int('log-every', v['log-every'], d.logEvery),
    evaluate: v['no-eval'] ? 'none' : 'full',
    probe: oneOf('probe', v.probe, d.probe, ['lbfgs', 'adam'] as const),
    probeEpochs: int('probe-epochs', v['probe-epochs'], d.probeEpochs),
  };
}

/** `byol setup [flags]`: engine/setup.sh, beside this file's folder in the sources and in the built package. */
function setup(flags: string[]): number {
  const script = fileURLToPath(new URL('../engine/setup.sh', import.meta.url));
  if (!existsSync(script)) {
    process.stderr.write(`byol setup: ${script} is missing from this installation\n`);
    return 1;
  }
  const r = spawnSync('bash', [script, ...flags], { stdio: 'inherit' });
  if (r.error) {
    process.stderr.write(`byol setup: could not run bash ${script}: ${r.error.message}\n`);
    return 1;
  }
  return r.status ?? 1;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || rest.includes('--help')) {
    process.stdout.write(HELP);
    return cmd ? 0 : 2;
  }
  if (cmd === 'setup') return setup(rest);
  if (cmd !== 'train') {
    process.stderr.write(`byol: unknown command '${cmd}'\n\n${HELP}`);
    return 2;
  }
  let opts: TrainOptions;
  try {
    opts = parseTrainArgs(rest);
  } catch (e) {
    process.stderr.write(`byol train: ${(e as Error).message}\n(see byol --help)\n`);
    return 2;
  }
  try {
    const report = await train(opts);
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return 0;
  } catch (e) {
    process.stderr.write(`\nbyol train: ${(e as Error).message}\n`);
    if (process.env.BYOL_DEBUG) console.error(e);
    return 1;
  } finally {
    releaseDevice();
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('byol/cli.ts')) {
  main(process.argv.slice(2)).then((code) => (process.exitCode = code));
}
