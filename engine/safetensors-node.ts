// Node-only safetensors files: atomic save (write a temporary file beside the target, fsync, rename, so a
// crash never leaves a half-written checkpoint under the real name) and validated load.

import { open, rename, unlink, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { serializeSafetensors, decodeSafetensors, type TensorEntry, type Metadata } from './safetensors.ts';

/** Writes `path` atomically: `path.tmp-<pid>`, fsync, rename over `path`, then fsync of the directory. */
export async function saveSafetensors(
  path: string,
  map: ReadonlyMap<string, TensorEntry> | Iterable<[string, TensorEntry]>,
  metadata?: Metadata,
): Promise<void> {
  const bytes = serializeSafetensors(map, metadata);
  const tmp = `${path}.tmp-${process.pid}`;
  let fh: Awaited<ReturnType<typeof open>> | null = null;
  try {
    fh = await open(tmp, 'w');
    await fh.writeFile(bytes);
    await fh.sync();
    await fh.close();
    fh = null;
    await rename(tmp, path);
  } catch (e) {
    await fh?.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw new Error(`saveSafetensors: cannot write ${path}: ${(e as Error).message}`);
  }
  // make the rename itself durable; not every platform lets a directory be opened for this
  try {
    const dir = await open(dirname(path), 'r');
    await dir.sync().catch(() => {});
    await dir.close();
  } catch {
    /* best effort */
  }
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
