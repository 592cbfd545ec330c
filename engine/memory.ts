// Observable memory accounting, so tests can prove that a training step leaks nothing.

import { pool } from './recorder.ts';
import { tapeLength } from './tape.ts';

export interface MemoryStats {
  liveBuffers: number;
  liveBytes: number;
  pooledBuffers: number;
  allocatedBytes: number;
  tapeNodes: number;
}

export function memoryStats(): MemoryStats {
  return { ...pool().stats(), tapeNodes: tapeLength() };
}

/** Number of pooled buffers handed out and not yet released: the live-buffer counter. */
export function liveTensors(): number {
  return pool().stats().liveBuffers;
}
