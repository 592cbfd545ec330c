// The target network's exponential moving average, BYOL §3.3: ξ ← τξ + (1−τ)θ over every parameter (weights,
// biases, BatchNorm γ/β; not the BN running statistics, which are buffers), in one dispatch over the arena.

import type { Arena } from '../engine/arena.ts';
import { emaKernel } from '../kernels/optim.ts';

/**
 * target ← tau·target + (1 − tau)·online. The online arena's layout must equal the target's or start with it
 * (an online network whose predictor is declared after the parts the target shares).
 */
export function emaUpdate(target: Arena, online: Arena, tau: number): void {
  if (typeof tau !== 'number' || !(tau >= 0 && tau <= 1)) throw new Error(`emaUpdate: tau must be in [0, 1], got ${tau}`);
  target.assertLive('emaUpdate');
  online.assertLive('emaUpdate (online)');
  if (target === online) throw new Error('emaUpdate: target and online are the same arena');
  const why = target.layout.mismatch(online.layout, true);
  if (why) throw new Error(`emaUpdate: the online arena's layout does not start with the target's (${why})`);
  // 1 - tau in float64: tau is close to 1 (0.996 .. 1), where computing it in f32 on the GPU would lose digits
  emaKernel(target.data, online.data, 1 - tau);
}
