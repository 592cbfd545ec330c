// Every check the engine has, by family: the kernels and optimizers (nn/checks/) and BYOL's augmentations
// (byol/augment-checks.ts). Framework-free (plain Errors): the browser page runs them on its adapter, and an
// application can run them on its own: `for (const c of checkFamilies.conv2d) await c.run()`.

import { engineChecks } from '../nn/checks/index.ts';
import type { Check } from '../nn/check.ts';
import { augmentChecks } from './augment-checks.ts';

export type { Check } from '../nn/check.ts';

// conv2d (and batchNorm fused with a conv) last: their pipelines take the longest to compile on CPU adapters, and a
// check that stalls there stops the page (byol/web/checks.ts), so every other family has been checked by then
const { conv2d, 'batchnorm-conv': batchNormConv, ...rest } = engineChecks;

export const checkFamilies: Record<string, Check[]> = { ...rest, augment: augmentChecks, conv2d, 'batchnorm-conv': batchNormConv };
