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
const ctx = await getDevice();
console.log(`device: ${ctx.info.description || ctx.info.vendor} (${ctx.info.architecture})`);

let idx = 0;
for (const f of files) {
  (globalThis as any).UVU_INDEX = idx++;
  (globalThis as any).UVU_QUEUE.push([relative(root, f)]);
  await import(pathToFileURL(f).href);
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
console.log(`${passed} passed, ${total - passed} failed${skipped ? `, ${skipped} skipped` : ''}`);
if (total === 0 || passed !== total) process.exitCode = 1;
