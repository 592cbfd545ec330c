// `byol-webgpu/no-dom`: for TypeScript projects without the DOM lib (Node projects with "lib": ["ES2022"]), the
// DOM names that WebGPU's declarations (@webgpu/types, which byol-webgpu's types reference) mention, declared
// just far enough for them to type-check. Add it to "types" only where the DOM lib is absent: the DOM lib declares
// BufferSource, PredefinedColorSpace and EventListenerOrEventListenerObject too, and type aliases cannot merge.
// Copied to dist/lib/no-dom.d.ts by scripts/build-lib.mjs.

type BufferSource = ArrayBufferView | ArrayBuffer;
type PredefinedColorSpace = 'display-p3' | 'srgb';
type EventListenerOrEventListenerObject = ((evt: Event) => void) | { handleEvent(evt: Event): void };
interface EventInit {
  bubbles?: boolean;
  cancelable?: boolean;
  composed?: boolean;
}
interface AddEventListenerOptions {
  capture?: boolean;
  once?: boolean;
  passive?: boolean;
  signal?: AbortSignal;
}
// image sources that only exist in browsers: never passed to anything in Node
interface ImageBitmap {}
interface ImageData {}
interface HTMLImageElement {}
interface VideoFrame {}
