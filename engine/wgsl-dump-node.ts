// BYOL_DUMP_WGSL=DIR: every generated kernel is written to DIR/<name>.<hash>.wgsl, with its registry key in a
// first-line comment, so the WGSL a launch runs can be read (and diffed) without a debugger. Node only.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { dumpKernels } from './kernel.ts';

export function dumpWgslTo(dir: string): void {
  mkdirSync(dir, { recursive: true });
  dumpKernels((name, key, wgsl) => {
    const hash = createHash('sha256').update(wgsl).digest('hex').slice(0, 10);
    writeFileSync(join(dir, `${name.replace(/[^\w.-]/g, '_')}.${hash}.wgsl`), `// ${key}\n${wgsl}`);
  });
}
