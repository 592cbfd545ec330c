// Node built-ins for the few engine features that exist only in Node (lavapipe settings, the WGSL dump, the tuning
// cache). Imported by a computed name, so that browser bundlers leave them out; never called in a browser.

export const nodeModule = (name: string): Promise<any> => import(/* @vite-ignore */ name);

/** True in Node (not in a browser, nor in a browser-like test environment with a window). */
export const isNode = typeof process !== 'undefined' && !!process.versions?.node && typeof (globalThis as any).window === 'undefined';
