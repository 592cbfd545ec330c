// GPU buffers by size class. A released buffer may still be read or written by commands that are recorded but
// not yet submitted, so it becomes reusable only after the next submit (the queue then orders any later
// writeBuffer after those commands).

const MIN_BYTES = 256;
const USAGE_STORAGE = 0x80 | 0x04 | 0x08; // STORAGE | COPY_SRC | COPY_DST (numeric: GPUBufferUsage is a runtime global)

/** Rounds up to 256 B, then to one of 4 steps per power of two, so reuse is likely and waste is at most 25%. */
export function sizeClass(bytes: number): number {
  const b = Math.max(MIN_BYTES, Math.ceil(bytes / 256) * 256);
  if (b <= 4096) return b;
  const p = 2 ** Math.floor(Math.log2(b));
  const step = p / 4;
  return Math.ceil(b / step) * step;
}

export interface PoolStats {
  liveBuffers: number; // handed out and not yet released
  liveBytes: number;
  pooledBuffers: number; // released, waiting for reuse
  allocatedBytes: number; // everything the pool owns on the device
}

export class BufferPool {
  private free = new Map<number, GPUBuffer[]>();
  /** creation order of each buffer: reuse takes the oldest free one of its size (afterSubmit) */
  private order = new WeakMap<GPUBuffer, number>();
  private created = 0;
  private released: GPUBuffer[] = [];
  private _releasedBytes = 0;
  private live = new Set<GPUBuffer>();
  private liveBytes = 0;
  private allocatedBytes = 0;
  private pooled = 0;

  constructor(private device: GPUDevice, private maxBufferSize: number) {}

  acquire(bytes: number, label?: string): GPUBuffer {
    const size = sizeClass(bytes);
    if (size > this.maxBufferSize) {
      throw new Error(`buffer of ${bytes} bytes exceeds the device's maxBufferSize ${this.maxBufferSize}`);
    }
    let buf = this.free.get(size)?.pop();
    if (buf) this.pooled--;
    else {
      buf = this.device.createBuffer({ size, usage: USAGE_STORAGE, label });
      this.order.set(buf, this.created++);
      this.allocatedBytes += size;
    }
    this.live.add(buf);
    this.liveBytes += size;
    return buf;
  }

  release(buf: GPUBuffer): void {
    if (!this.live.delete(buf)) throw new Error('BufferPool.release: buffer is not live (released twice?)');
    this.liveBytes -= buf.size;
    this.released.push(buf);
    this._releasedBytes += buf.size;
  }

  /** Bytes released since the last submit: not reusable until the next one. */
  get releasedBytes(): number {
    return this._releasedBytes;
  }

  /**
   * Called right after a submit: buffers released before it may now be reused. Each size class hands out its
   * oldest free buffer first, so a loop that allocates the same way every step gets the same buffers every step,
   * and the recorder's bind groups for them are reused (engine/recorder.ts, bindGroupFor).
   */
  afterSubmit(): void {
    const touched = new Set<GPUBuffer[]>();
    for (const b of this.released) {
      let list = this.free.get(b.size);
      if (!list) this.free.set(b.size, (list = []));
      list.push(b);
      touched.add(list);
      this.pooled++;
    }
    // newest first: pop() takes the oldest
    for (const list of touched) list.sort((a, b) => this.order.get(b)! - this.order.get(a)!);
    this.released.length = 0;
    this._releasedBytes = 0;
  }

  /** Frees pooled buffers back to the device (not live ones). */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) {
      this.allocatedBytes -= b.size;
      b.destroy();
    }
    this.free.clear();
    this.pooled = 0;
  }

  stats(): PoolStats {
    return { liveBuffers: this.live.size, liveBytes: this.liveBytes, pooledBuffers: this.pooled + this.released.length, allocatedBytes: this.allocatedBytes };
  }

  destroyAll(): void {
    this.trim();
    for (const b of this.live) b.destroy();
    for (const b of this.released) b.destroy();
    this.live.clear();
    this.released.length = 0;
    this._releasedBytes = 0;
    this.liveBytes = 0;
    this.allocatedBytes = 0;
  }
}
