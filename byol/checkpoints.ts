// Training checkpoints in one folder: ckpt-<step>.safetensors written atomically, a latest.json pointer
// written atomically after it, the last few kept. Loading falls back to an older checkpoint when the newest is
// unreadable, so a crash at any moment loses at most the steps since the last completed save.

import { mkdirSync, readdirSync, rmSync, writeFileSync, openSync, fsyncSync, closeSync, renameSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { saveSafetensors, readSafetensors } from '../engine/safetensors-node.ts';
import type { TensorEntry } from '../engine/safetensors.ts';

export interface LoadedCheckpoint {
  path: string;
  step: number;
  tensors: Map<string, TensorEntry>;
  meta: Record<string, string>;
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  const fd = openSync(tmp, 'r');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, path);
}

export class CheckpointStore {
  constructor(readonly dir: string, readonly keep = 3) {}

  private list(): { step: number; path: string }[] {
    if (!existsSync(this.dir)) return [];
    return readdirSync(this.dir)
      .map((f) => /^ckpt-(\d+)\.safetensors$/.exec(f))
      .filter((m): m is RegExpExecArray => !!m)
      .map((m) => ({ step: Number(m[1]), path: join(this.dir, m[0]) }))
      .sort((a, b) => b.step - a.step);
  }

  async save(step: number, tensors: Map<string, TensorEntry>, meta: Record<string, string>): Promise<string> {
    mkdirSync(this.dir, { recursive: true });
    const path = join(this.dir, `ckpt-${String(step).padStart(8, '0')}.safetensors`);
    await saveSafetensors(path, tensors, meta);
    writeAtomic(join(this.dir, 'latest.json'), JSON.stringify({ step, file: path.split('/').pop() }) + '\n');
    for (const old of this.list().slice(this.keep)) rmSync(old.path, { force: true });
    return path;
  }

  /** The newest readable checkpoint (null if the folder has none); `warn` hears about unreadable ones skipped. */
  async loadLatest(warn: (msg: string) => void = () => {}): Promise<LoadedCheckpoint | null> {
    const candidates = this.list();
    const pointer = join(this.dir, 'latest.json');
    if (existsSync(pointer)) {
      try {
        const { file } = JSON.parse(readFileSync(pointer, 'utf8'));
        const i = candidates.findIndex((c) => c.path.endsWith('/' + file));
        if (i > 0) candidates.unshift(...candidates.splice(i, 1));
      } catch {
        warn(`${pointer} is unreadable; using the newest checkpoint file`);
      }
    }
    const errors: string[] = [];
    for (const c of candidates) {
      try {
        const { tensors, metadata } = await readSafetensors(c.path);
        return { path: c.path, step: c.step, tensors, meta: (metadata ?? {}) as Record<string, string> };
      } catch (e) {
        errors.push((e as Error).message);
        warn(`skipping unreadable checkpoint: ${(e as Error).message}`);
      }
    }
    if (errors.length) throw new Error(`no readable checkpoint in ${this.dir}: ${errors.join('; ')}`);
    return null;
  }
}
