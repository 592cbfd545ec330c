// The project's seeded generator lives in the engine (one implementation for initialization, data order and
// augmentations); byol/ code imports it from here.

export { Rng, deriveSeed } from '../engine/random.ts';
