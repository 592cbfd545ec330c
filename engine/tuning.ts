// Tunables as explicit, per-device state. Each kernel family that has choices (tile shapes, lane modes,
// variants) keeps them in one record here, made from the family's defaults for the current adapter on first
// use and forgotten with the device. A tuner that measured the candidates writes the record; a caller that
// wants a particular choice passes it in the op's options (`{ tuning: {...} }`), which tests do instead of
// flipping global setters.

import { onRelease } from './device.ts';
import { nodeModule, isNode } from './node-module.ts';

const table = new Map<string, unknown>();
onRelease(() => table.clear());

/** The family's record for this device, made by `defaults()` the first time. */
export function deviceTuning<T extends object>(family: string, defaults: () => T): T {
  let t = table.get(family) as T | undefined;
  if (!t) table.set(family, (t = defaults()));
  return t;
}

/** Replaces the family's record for this device (what a tuner does with its measured choice). */
export function setDeviceTuning<T extends object>(family: string, value: T): void {
  table.set(family, value);
}

/** The record with a caller's overrides applied: what one launch uses. */
export function tuningFor<T extends object>(family: string, defaults: () => T, overrides?: Partial<T>): T {
  const base = deviceTuning(family, defaults);
  if (!overrides) return base;
  // an option left undefined keeps the device's choice
  const given = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  return { ...base, ...given };
}

// ---- measured choices that outlive the process: one JSON file per family, keyed by adapter -----------------
// In Node: $BYOL_WEBGPU_CACHE_DIR or os.tmpdir()/byol-webgpu, file `${name}.json`; in browsers: localStorage.
// Tuners (kernels/*-tune.ts) key their entries by adapter and kernel version, so a new driver or new kernels
// measure again. A missing, unreadable or read-only cache only costs a measurement.


/** Where a tuner's cache lives: a file path in Node (null: no file), a localStorage key in browsers. */
export async function tuneCachePath(name: string, file?: string | null): Promise<string | null> {
  if (!isNode) return `byol-webgpu:${name}`;
  if (file !== undefined) return file;
  const os = await nodeModule('node:os');
  const path = await nodeModule('node:path');
  const dir = process.env.BYOL_WEBGPU_CACHE_DIR || path.join(os.tmpdir(), 'byol-webgpu');
  return path.join(dir, `${name}.json`);
}

export async function readTuneCache<T>(where: string | null): Promise<Record<string, T>> {
  if (!where) return {};
  try {
    if (!isNode) {
      const raw = (globalThis as any).localStorage?.getItem(where);
      return raw ? JSON.parse(raw) : {};
    }
    const fs = await nodeModule('node:fs');
    return JSON.parse(fs.readFileSync(where, 'utf8'));
  } catch {
    return {};
  }
}

export async function writeTuneCache<T>(where: string | null, data: Record<string, T>): Promise<void> {
  if (!where) return;
  try {
    if (!isNode) {
      (globalThis as any).localStorage?.setItem(where, JSON.stringify(data));
      return;
    }
    const fs = await nodeModule('node:fs');
    const path = await nodeModule('node:path');
    fs.mkdirSync(path.dirname(where), { recursive: true });
    fs.writeFileSync(where, JSON.stringify(data, null, 2) + '\n');
  } catch {
    // read-only disk or disabled storage: measure again next time
  }
}
