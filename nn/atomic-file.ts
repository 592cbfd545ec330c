// Node-only: write a file so that a crash never leaves it half-written under its real name — a temporary file
// beside it, fsync, rename over the target, then fsync of the directory so the rename itself is durable.

import { open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';

export async function writeFileAtomic(path: string, data: string | Uint8Array, what = 'writeFileAtomic'): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  let fh: Awaited<ReturnType<typeof open>> | null = null;
  try {
    fh = await open(tmp, 'w');
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = null;
    await rename(tmp, path);
  } catch (e) {
    await fh?.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw new Error(`${what}: cannot write ${path}: ${(e as Error).message}`);
  }
  try {
    const d = await open(dirname(path), 'r');
    await d.sync().catch(() => {});
    await d.close();
  } catch {
    /* not every platform lets a directory be opened for fsync */
  }
}
