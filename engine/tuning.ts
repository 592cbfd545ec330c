// Tunables as explicit, per-device state. Each kernel family that has choices (tile shapes, lane modes,
// variants) keeps them in one record here, made from the family's defaults for the current adapter on first
// use and forgotten with the device. A tuner that measured the candidates writes the record; a caller that
// wants a particular choice passes it in the op's options (`{ tuning: {...} }`), which tests do instead of
// flipping global setters.

import { onRelease } from './device.ts';

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
