// Times the browser page's BYOL step (resnet-small width 8, batch 32, 24x24x1, heads 128/64) on this process's
// adapter, per conv2d variant: `VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json npx tsx bench/web-step.ts`
// gives the browser test's SwiftShader adapter without a browser.
// Usage: tsx bench/web-step.ts [steps] [variant ...]

import { getDevice, releaseDevice, sync, tensor } from '../nn/index.ts';
import { setDeviceTuning } from '../engine/tuning.ts';
import { defaultConvTuning, type ConvVariant } from '../kernels/conv2d.ts';
import { BYOL } from '../byol/model.ts';
import { uniformArray } from '../engine/random.ts';

const steps = Number(process.argv[2] ?? 4);
const variants = (process.argv.slice(3).length ? process.argv.slice(3) : ['default']) as (ConvVariant | 'default')[];
const ctx = await getDevice();
console.log(`adapter: ${ctx.info.vendor}/${ctx.info.architecture} ${ctx.info.description}`);
const B = 32;
for (const variant of variants) {
  const base = defaultConvTuning();
  setDeviceTuning('conv2d', variant === 'default' ? base : { ...base, variant });
  const model = new BYOL({
    encoder: { arch: 'resnet-small', width: 8, stem: 'small', inChannels: 1 },
    projHidden: 128, projDim: 64, predHidden: 128, optimizer: 'adam', baseLr: 3e-3, batchSize: B, totalSteps: 100,
  });
  const v1 = tensor(uniformArray(B * 24 * 24, 1), [B, 24, 24, 1]);
  const v2 = tensor(uniformArray(B * 24 * 24, 2), [B, 24, 24, 1]);
  const times: number[] = [];
  for (let k = 0; k <= steps; k++) {
    const t0 = performance.now();
    const { loss } = model.trainStep(v1, v2);
    await loss.item();
    loss.dispose();
    times.push(performance.now() - t0);
  }
  await sync();
  const [first, ...rest] = times;
  rest.sort((a, b) => a - b);
  console.log(`${variant} (${variant === 'default' ? base.variant : variant}): first step ${first.toFixed(0)} ms (compiles), then median ${rest[rest.length >> 1].toFixed(0)} ms`);
  v1.dispose();
  v2.dispose();
  model.dispose();
}
releaseDevice();
