// The peer: TensorFlow.js 4.22 with tfjs-backend-webgpu, loaded into this process on the same Dawn instance
// (the GPU object our engine got from the `webgpu` package), so it gets the same adapter. tfjs asks that
// adapter for its own GPUDevice, as it does in a browser; the two devices do not share queues, and every
// sample waits for its own device to be idle, so neither side's work overlaps the other's.
//
// tfjs-backend-webgpu registers itself at import time only if navigator.gpu exists, so navigator must be in
// place before the import. The union package '@tensorflow/tfjs' also registers every gradient (tfjs-core
// alone has none), which rows that time backward ops need.

export type Tf = typeof import('@tensorflow/tfjs');

export interface Peer {
  tf: Tf;
  /** e.g. "TensorFlow.js 4.22.0, tfjs-backend-webgpu" */
  name: string;
  /** Submits what tfjs recorded and waits until its device is idle. */
  sync: () => Promise<void>;
}

function exposeNavigatorGpu(gpu: GPU): void {
  const g = globalThis as any;
  if (g.navigator) {
    if (g.navigator.gpu !== gpu) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
  } else {
    Object.defineProperty(g, 'navigator', { value: { gpu }, configurable: true, writable: true });
  }
}

/** Loads tfjs on `gpu`; returns null (with the reason printed) where it cannot run. */
export async function loadPeer(gpu: GPU): Promise<Peer | null> {
  try {
    exposeNavigatorGpu(gpu);
    const tf = (await import('@tensorflow/tfjs')) as unknown as Tf;
    await import('@tensorflow/tfjs-backend-webgpu');
    if (!(await tf.setBackend('webgpu'))) throw new Error('tf.setBackend("webgpu") returned false');
    await tf.ready();
    const backend = tf.backend() as any;
    const sync = async () => {
      // tfjs batches dispatches into its own encoder and submits every few of them; flush the rest
      if (backend.commandEncoder) {
        backend.endComputePassEncoder?.();
        backend.submitQueue();
      }
      await backend.device.queue.onSubmittedWorkDone();
    };
    return { tf, name: `TensorFlow.js ${tf.version.tfjs}, tfjs-backend-webgpu`, sync };
  } catch (e) {
    console.error(`peer: tfjs-backend-webgpu unavailable (${(e as Error).message}); peer columns stay empty`);
    return null;
  }
}
