// Node-only safetensors files: atomic save (write a temporary file beside the target, fsync, rename, so a
// crash never leaves a half-written checkpoint under the real name) and validated load.

import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from './atomic-file.ts';
import { serializeSafetensors, decodeSafetensors, type TensorEntry, type Metadata } from '../engine/safetensors.ts';

/** Writes `path` atomically: `path.tmp-<pid>`, fsync, rename over `path`, then fsync of the directory. */
export async function saveSafetensors(
  path: string,
  map: ReadonlyMap<string, TensorEntry> | Iterable<[string, TensorEntry]>,
  metadata?: Metadata,
): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(map, metadata), 'saveSafetensors');
}

/** Reads and validates a safetensors file; every dtype is converted to float32. */
export async function readSafetensors(path: string): Promise<{ tensors: Map<string, TensorEntry>; metadata: Metadata }> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (e) {
    throw new Error(`loadSafetensors: cannot read ${path}: ${(e as Error).message}`);
  }
  return decodeSafetensors(bytes, path);
}

export async function loadSafetensors(path: string): Promise<Map<string, TensorEntry>> {
  return (await readSafetensors(path)).tensors;
}
