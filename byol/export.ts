// Checkpoints PyTorch can load: torchStateDict() (NCHW/OIHW layouts, torchvision names) plus each BatchNorm's
// num_batches_tracked as an int64 scalar, which torch's strict load_state_dict requires.

import { Module, torchStateDict, loadTorchStateDict } from '../nn/module.ts';
import { BatchNorm } from '../nn/layers.ts';
import type { TensorEntry } from '../engine/safetensors.ts';

export async function exportTorchStateDict(model: Module): Promise<Map<string, TensorEntry>> {
  const out = await torchStateDict(model);
  for (const [name, m] of model.namedModules()) {
    if (m instanceof BatchNorm) out.set(`${name ? name + '.' : ''}num_batches_tracked`, { shape: [], data: Float32Array.of(m.numBatchesTracked), dtype: 'I64' });
  }
  return out;
}

/** Loads a torch-layout state dict (as written by exportTorchStateDict or by PyTorch itself). */
export function importTorchStateDict(model: Module, state: ReadonlyMap<string, TensorEntry>): void {
  const rest = new Map<string, TensorEntry>();
  const counters = new Map<string, number>();
  for (const [n, e] of state) {
    if (n.endsWith('num_batches_tracked')) counters.set(n.slice(0, -'num_batches_tracked'.length).replace(/\.$/, ''), e.data[0]);
    else rest.set(n, e);
  }
  loadTorchStateDict(model, rest);
  for (const [name, m] of model.namedModules()) if (m instanceof BatchNorm) m.numBatchesTracked = counters.get(name) ?? 0;
}
