// Runs every test/**/*.test.ts in one process (one WebGPU device), prints uvu's report and a closing
// "N passed, N failed" line, and releases the device so the process exits.
// Usage: tsx test/run.ts [filter]   (filter: substring of the file path)

import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('.', import.meta.url));
const filter = process.argv[2] ?? '';

function find(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (name !== 'browser' && name !== 'fixtures') out.push(...find(p));
    } else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const files = find(root).filter((f) => relative(root, f).includes(filter));
(globalThis as any).UVU_DEFER = 1;
const uvu = await import('uvu');
const { getDevice, releaseDevice } = await import('../engine/device.ts');
// one Dawn instance for the whole run: the device-loss tests make a dozen devices (engine/node-gpu.ts)
const { retainDawnInstance } = await import('#node-gpu');
retainDawnInstance(true);
const ctx = await getDevice();
console.log(`device: ${ctx.info.description || ctx.info.vendor} (${ctx.info.architecture})`);

const { liveTensors } = await import('../engine/memory.ts');
const { sync } = await import('../engine/recorder.ts');
const { deviceGeneration } = await import('../engine/device.ts');

/** The live-buffer count, first replacing a device that a test left lost or released (device-loss tests). */
async function liveOnWorkingDevice(): Promise<number> {
  try {
    await sync();
    return liveTensors();
  } catch {
    releaseDevice();
    await getDevice();
    return liveTensors();
  }
}
const { tapeLength, clearTape } = await import('../engine/tape.ts');

// Every file must give back every buffer it took and leave the tape empty: a runner before and after each file's
// suites checks it and counts as one test ("<file> leaks nothing").
let idx = 0;
for (const f of files) {
  const name = relative(root, f);
  (globalThis as any).UVU_INDEX = idx++;
  const group: unknown[] = [name];
  (globalThis as any).UVU_QUEUE.push(group);
  let before = 0;
  let generation = 0;
  group.push(async () => {
    before = await liveOnWorkingDevice();
    generation = deviceGeneration();
    return [true, 0, 0, 0];
  });
  await import(pathToFileURL(f).href);
  group.push(async () => {
    const after = await liveOnWorkingDevice();
    const tape = tapeLength();
    clearTape();
    // a file that replaces the device (device-loss tests) starts a new pool: then nothing may be live at all
    const ok = (generation === deviceGeneration() ? after === before : after === 0) && tape === 0;
    const msg = `   FAIL  ${name} leaks: ${after - before} live buffers and ${tape} tape records left behind\n`;
    return [ok ? true : msg, ok ? 1 : 0, 0, 1];
  });
}

// uvu prints "Total: N" and "Passed: N"; keep its report and derive the closing line from it
let report = '';
const write = process.stdout.write.bind(process.stdout);
(process.stdout as any).write = (chunk: any, ...rest: any[]) => {
  report += String(chunk);
  return write(chunk, ...rest);
};
await uvu.exec();
(process.stdout as any).write = write;
const plain = report.replace(/\x1b\[[0-9;]*m/g, '');
const total = Number(/Total:\s+(\d+)/.exec(plain)?.[1] ?? 0);
const passed = Number(/Passed:\s+(\d+)/.exec(plain)?.[1] ?? 0);
const skipped = Number(/Skipped:\s+(\d+)/.exec(plain)?.[1] ?? 0);
releaseDevice();
retainDawnInstance(false); // lets the process exit
console.log(`${passed} passed, ${total - passed} failed${skipped ? `, ${skipped} skipped` : ''}`);
if (total === 0 || passed !== total) process.exitCode = 1;
