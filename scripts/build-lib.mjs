// `npm run build` (and prepack): compiles the library into dist/lib with tsconfig.build.json, then adds what tsc
// does not emit: the setup script that `byol setup` runs, the types of `byol-webgpu/no-dom`, and dist/lib/package.json, whose "imports" give the
// compiled files the same '#node-gpu' switch that the root package.json gives the sources (Node and bundlers
// resolve '#' imports through the nearest package.json).
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist/lib');
rmSync(out, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });

for (const f of ['engine/setup.sh', 'engine/probe-adapter.mjs']) copyFileSync(join(root, f), join(out, f));
copyFileSync(join(root, 'scripts/no-dom.d.ts'), join(out, 'no-dom.d.ts'));
chmodSync(join(out, 'byol/bin.js'), 0o755);
const pkg = {
  type: 'module',
  imports: {
    '#node-gpu': {
      types: './engine/node-gpu.d.ts',
      browser: './engine/node-gpu.browser.js',
      default: './engine/node-gpu.js',
    },
  },
};
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
console.log(`build: ${out.slice(root.length + 1)}`);
