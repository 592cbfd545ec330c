// GPU time of a stretch of our recorded work, from timestamp queries: an empty compute pass stamps the start
// before the ops and another the end after them (WebGPU has timestamps only at pass boundaries; passes run in
// order, across submits too). On lavapipe the "GPU" is the CPU threads that run the queue, so this is the time
// the driver spent executing, without the JS-side recording and submission that wall-clock time includes.

import { gpu } from '../engine/device.ts';
import { encoderForCopy, sync } from '../engine/recorder.ts';
import { idleWhile } from '../engine/idle-wait.ts';

export class GpuTimer {
  private readonly querySet: GPUQuerySet;
  private readonly resolved: GPUBuffer;
  private readonly readback: GPUBuffer;

  /** null where the device has no 'timestamp-query' feature */
  static create(): GpuTimer | null {
    return gpu('GpuTimer').hasTimestamps ? new GpuTimer() : null;
  }

  private constructor() {
    const { device } = gpu('GpuTimer');
    this.querySet = device.createQuerySet({ type: 'timestamp', count: 2 });
    this.resolved = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    this.readback = device.createBuffer({ size: 16, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
  }

  private stamp(where: 'beginningOfPassWriteIndex' | 'endOfPassWriteIndex', index: number): void {
    const pass = encoderForCopy('GpuTimer').beginComputePass({ timestampWrites: { querySet: this.querySet, [where]: index } });
    pass.end();
  }

  /** Call before recording the ops to time. */
  begin(): void {
    this.stamp('beginningOfPassWriteIndex', 0);
  }

  /** Call after recording them: waits for the device and returns the ms between the two stamps. */
  async end(): Promise<number> {
    this.stamp('endOfPassWriteIndex', 1);
    const enc = encoderForCopy('GpuTimer');
    enc.resolveQuerySet(this.querySet, 0, 2, this.resolved, 0);
    enc.copyBufferToBuffer(this.resolved, 0, this.readback, 0, 16);
    await sync();
    await idleWhile(this.readback.mapAsync(GPUMapMode.READ));
    const [t0, t1] = new BigUint64Array(this.readback.getMappedRange().slice(0));
    this.readback.unmap();
    return Number(t1 - t0) / 1e6;
  }

  destroy(): void {
    this.querySet.destroy();
    this.resolved.destroy();
    this.readback.destroy();
  }
}
