// Checkpoints PyTorch can load: torchStateDict() (NCHW/OIHW layouts, torchvision names) plus each BatchNorm's
// num_batches_tracked as an int64 scalar, which torch's strict load_state_dict requires.

import { Module, torchStateDict, loadTorchStateDict, type LoadOptions } from '../nn/module.ts';
import { BatchNorm } from '../nn/layers.ts';
import { fmtShape } from '../engine/tensor.ts';
import type { TensorEntry } from '../engine/safetensors.ts';

const COUNTER = 'num_batches_tracked';

export async function exportTorchStateDict(model: Module): Promise<Map<string, TensorEntry>> {
  const out = await torchStateDict(model);
  for (const [name, m] of model.namedModules()) {
    if (m instanceof BatchNorm) out.set(`${name ? name + '.' : ''}${COUNTER}`, { shape: [], data: Float32Array.of(m.numBatchesTracked), dtype: 'I64' });
  }
  return out;
}

/**
 * Loads a torch-layout state dict (as written by exportTorchStateDict or by PyTorch itself). Strict (the
 * default) as torch's load_state_dict: unknown names are errors, a `num_batches_tracked` of a module that is not
 * a BatchNorm included; a wrong shape always is (a counter must be a scalar: [] or, as torch accepts from old
 * checkpoints, [1]). A missing counter loads as 0, as torch does for state dicts without version metadata.
 */
export function importTorchStateDict(model: Module, state: ReadonlyMap<string, TensorEntry>, opts: LoadOptions = {}): void {
  const what = 'importTorchStateDict';
  const strict = opts.strict ?? true;
  const norms = new Map(model.namedModules().filter(([, m]) => m instanceof BatchNorm) as [string, BatchNorm][]);
  const rest = new Map<string, TensorEntry>();
  const counters = new Map<string, number>();
  const problems: string[] = [];
  for (const [n, e] of state) {
    const owner = n === COUNTER ? '' : n.endsWith(`.${COUNTER}`) ? n.slice(0, -COUNTER.length - 1) : null;
    if (owner === null) {
      rest.set(n, e);
      continue;
    }
    if (!norms.has(owner)) {
      if (strict) problems.push(`unexpected entry '${n}': the model has no BatchNorm ${owner ? `named '${owner}'` : 'at its root'}`);
      continue;
    }
    const scalar = e.shape.length === 0 || (e.shape.length === 1 && e.shape[0] === 1);
    if (!scalar || e.data.length !== 1) {
      problems.push(`'${n}' has shape ${fmtShape(e.shape)} (${e.data.length} values) in the checkpoint but [] in the model (a batch count)`);
      continue;
    }
    const v = e.data[0];
    if (!Number.isInteger(v) || v < 0) problems.push(`'${n}' is ${v}, expected a batch count (an integer >= 0)`);
    else counters.set(owner, v);
  }
  if (problems.length) throw new Error(`${what}: ${problems.join('; ')}`);
  loadTorchStateDict(model, rest, opts);
  for (const [name, m] of norms) m.numBatchesTracked = counters.get(name) ?? 0;
}
