// Training checkpoints on disk (Node only), robust to crashes at any moment. Each save writes
// `ckpt-<step>.safetensors` atomically (temporary file, fsync, rename, directory fsync) with the step, a JSON
// `meta` and a SHA-256 of the tensors in its metadata, then points `latest.json` at it the same way, then
// deletes all but the newest `keep` checkpoints. Loading validates the file completely (structure, checksum,
// step) and falls back to the next older valid checkpoint, with a warning, when the newest is damaged.

import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { saveSafetensors } from './safetensors-node.ts';
import { writeFileAtomic } from './atomic-file.ts';
import { decodeSafetensors, type TensorEntry } from '../engine/safetensors.ts';

export interface CheckpointPayload {
  /** Everything to restore, by unique name: model and target state dicts, optimizer state, ... */
  tensors: ReadonlyMap<string, TensorEntry>;
  /** JSON-serializable: config, RNG state, schedule position, data loader epoch, ... */
  meta: object;
}

export interface SaveCheckpointOptions {
  /** How many checkpoints to keep, newest first (default 3, at least 1). */
  keep?: number;
}

export interface LoadedCheckpoint {
  step: number;
  path: string;
  tensors: Map<string, TensorEntry>;
  meta: any;
  /** Why newer checkpoints were skipped (also passed to onWarning); empty when the newest was fine. */
  warnings: string[];
}

export interface LoadCheckpointOptions {
  /** Called for each damaged or missing checkpoint that was skipped (default: console.warn). */
  onWarning?: (message: string) => void;
}

const FORMAT = 'byol-webgpu-checkpoint/1';
const LATEST = 'latest.json';
const NAME = /^ckpt-(\d+)\.safetensors$/;

export const checkpointName = (step: number) => `ckpt-${step}.safetensors`;

function checkStep(step: number, what: string): void {
  if (!Number.isSafeInteger(step) || step < 0) throw new Error(`${what}: step must be a non-negative integer, got ${step}`);
}

/** SHA-256 over name, dtype, shape and data of every tensor, in sorted name order (independent of map order). */
export function tensorsDigest(tensors: ReadonlyMap<string, TensorEntry>): string {
  const h = createHash('sha256');
  for (const name of [...tensors.keys()].sort()) {
    const e = tensors.get(name)!;
    h.update(`${name}\0${e.dtype ?? 'F32'}\0${e.shape.join(',')}\0`);
    h.update(new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength));
  }
  return h.digest('hex');
}

export { writeFileAtomic };

/** Checkpoint files in `dir`, newest first. */
export async function listCheckpoints(dir: string): Promise<{ step: number; path: string }[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new Error(`listCheckpoints: cannot read ${dir}: ${(e as Error).message}`);
  }
  const out: { step: number; path: string }[] = [];
  for (const n of names) {
    const m = NAME.exec(n);
    if (m && Number.isSafeInteger(Number(m[1]))) out.push({ step: Number(m[1]), path: join(dir, n) });
  }
  return out.sort((a, b) => b.step - a.step);
}

// saves to one directory run one after another (they share latest.json and its temporary file)
const queues = new Map<string, Promise<unknown>>();

/**
 * Saves a checkpoint for `step` and returns its path. Resolves only when the file and latest.json are both
 * durable; a crash before that leaves the previous checkpoints intact (and at worst this one complete but not
 * yet named in latest.json, which loadLatestCheckpoint() still finds).
 */
export function saveCheckpoint(dir: string, step: number, payload: CheckpointPayload, opts: SaveCheckpointOptions = {}): Promise<string> {
  const what = 'saveCheckpoint';
  checkStep(step, what);
  const keep = opts.keep ?? 3;
  if (!Number.isInteger(keep) || keep < 1) throw new Error(`${what}: keep must be an integer >= 1, got ${keep}`);
  if (!(payload?.tensors instanceof Map)) throw new Error(`${what}: payload.tensors must be a Map of name → {shape, data}`);
  let metaJson: string;
  try {
    metaJson = JSON.stringify(payload.meta ?? {});
  } catch (e) {
    throw new Error(`${what}: payload.meta is not JSON-serializable: ${(e as Error).message}`);
  }
  const run = async () => {
    await mkdir(dir, { recursive: true });
    const path = join(dir, checkpointName(step));
    await saveSafetensors(path, payload.tensors, {
      format: FORMAT,
      step: String(step),
      meta: metaJson,
      sha256: tensorsDigest(payload.tensors),
    });
    await writeFileAtomic(join(dir, LATEST), JSON.stringify({ format: FORMAT, step, file: checkpointName(step) }) + '\n');
    for (const old of (await listCheckpoints(dir)).filter((c) => c.step !== step).slice(keep - 1)) {
      await unlink(old.path).catch(() => {});
    }
    await removeStaleTemporaries(dir);
    return path;
  };
  const prev = queues.get(dir) ?? Promise.resolve();
  const next = prev.catch(() => {}).then(run);
  queues.set(dir, next);
  next.finally(() => queues.get(dir) === next && queues.delete(dir)).catch(() => {});
  return next;
}

/** Temporary files of writers that died (kill -9 mid-save) would otherwise pile up. */
async function removeStaleTemporaries(dir: string): Promise<void> {
  for (const n of await readdir(dir).catch(() => [] as string[])) {
    const m = /\.tmp-(\d+)$/.exec(n);
    if (!m || Number(m[1]) === process.pid || isAlive(Number(m[1]))) continue;
    await unlink(join(dir, n)).catch(() => {});
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Reads and fully validates one checkpoint file: safetensors structure, format, step, checksum, meta JSON. */
export async function readCheckpoint(path: string, expectStep?: number): Promise<{ step: number; tensors: Map<string, TensorEntry>; meta: any }> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (e) {
    throw new Error(`${path}: cannot read checkpoint: ${(e as Error).message}`);
  }
  const { tensors, metadata } = decodeSafetensors(bytes, path);
  const fail = (msg: string): never => {
    throw new Error(`${path}: ${msg}`);
  };
  if (metadata.format !== FORMAT) fail(`not a checkpoint of this format (metadata format ${JSON.stringify(metadata.format)}, expected '${FORMAT}')`);
  const step = Number(metadata.step);
  if (!Number.isSafeInteger(step) || step < 0) fail(`invalid step ${JSON.stringify(metadata.step)} in the metadata`);
  if (expectStep !== undefined && step !== expectStep) fail(`holds step ${step} but its name says step ${expectStep}`);
  const digest = tensorsDigest(tensors);
  if (digest !== metadata.sha256) fail(`checksum mismatch: the tensors hash to ${digest.slice(0, 16)}…, the file recorded ${String(metadata.sha256).slice(0, 16)}… (corrupt data)`);
  let meta: any;
  try {
    meta = JSON.parse(metadata.meta ?? '{}');
  } catch (e) {
    fail(`meta is not valid JSON (${(e as Error).message})`);
  }
  return { step, tensors, meta };
}

/**
 * Loads the newest valid checkpoint in `dir`: the one latest.json names or any newer complete one, falling
 * back to older ones (with a warning for each one skipped) when files are truncated or corrupt. Throws if
 * there is none, or none is valid (listing why each failed).
 */
export async function loadLatestCheckpoint(dir: string, opts: LoadCheckpointOptions = {}): Promise<LoadedCheckpoint> {
  const warn = opts.onWarning ?? ((m: string) => console.warn(m));
  const warnings: string[] = [];
  const note = (m: string) => {
    warnings.push(m);
    warn(m);
  };
  const candidates = await listCheckpoints(dir);
  let pointed: number | null = null;
  try {
    const j = JSON.parse(await readFile(join(dir, LATEST), 'utf8'));
    if (j?.format !== FORMAT || !Number.isSafeInteger(j.step) || j.file !== checkpointName(j.step)) throw new Error(`unexpected content ${JSON.stringify(j).slice(0, 200)}`);
    pointed = j.step;
    if (!candidates.some((c) => c.step === pointed)) note(`loadLatestCheckpoint: ${LATEST} in ${dir} names step ${pointed}, but ${checkpointName(pointed!)} is missing`);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (candidates.length) note(`loadLatestCheckpoint: ${code === 'ENOENT' ? `no ${LATEST}` : `${LATEST} is unreadable (${(e as Error).message})`} in ${dir}; using the checkpoint files found`);
  }
  if (!candidates.length) throw new Error(`loadLatestCheckpoint: no checkpoint in ${dir} (no ckpt-<step>.safetensors files)`);
  const failures: string[] = [];
  for (const c of candidates) {
    try {
      const r = await readCheckpoint(c.path, c.step);
      if (pointed !== null && c.step > pointed) {
        note(`loadLatestCheckpoint: ${checkpointName(c.step)} is newer than the step ${pointed} named in ${LATEST} (a save interrupted before updating it) and valid: using it`);
      }
      return { ...r, path: c.path, warnings };
    } catch (e) {
      failures.push((e as Error).message);
      note(`loadLatestCheckpoint: skipping damaged checkpoint: ${(e as Error).message}`);
    }
  }
  throw new Error(`loadLatestCheckpoint: no valid checkpoint in ${dir}; ${failures.length} damaged: ${failures.join('; ')}`);
}
