// Bundles the browser page (byol/web/main.ts -> dist/web/main.js, plus index.html) with esbuild, and fails the
// build if a Node-only module would reach the bundle. Under the "browser" condition engine/device.ts's '#node-gpu'
// is a stub (package.json "imports"), so Dawn's `webgpu` package is not even an external import: the metafile
// check below proves that no external import is left.
// Usage: tsx byol/web/build.ts [--outdir DIR] [--minify]

import { build, type Plugin, type Metafile } from 'esbuild';
import { builtinModules } from 'node:module';
import { copyFileSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');

/** Packages that only work in Node (native addons, Node streams), in addition to Node's builtins. */
const NODE_ONLY_PACKAGES = ['webgpu', 'pngjs', 'uvu/run', 'tsx', 'esbuild', 'playwright-core'];

function isNodeOnly(spec: string): boolean {
  if (spec.startsWith('node:')) return true;
  const bare = spec.split('/')[0];
  return builtinModules.includes(spec) || builtinModules.includes(bare) || NODE_ONLY_PACKAGES.some((p) => spec === p || spec.startsWith(p + '/'));
}

/** Errors on any Node-only import. */
const nodeOnlyGuard: Plugin = {
  name: 'node-only-guard',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      if (!isNodeOnly(args.path)) return undefined;
      const from = relative(root, args.importer) || args.importer;
      return { errors: [{ text: `Node-only module '${args.path}' imported by ${from} (${args.kind}) cannot go in the browser bundle` }] };
    });
  },
};

export interface WebBuild {
  outdir: string;
  /** the bundle, the page and the source map, as absolute paths */
  files: string[];
  bundleBytes: number;
  /** source files in the bundle, relative to the repository root */
  inputs: string[];
}

/** Checks the bundle's imports from the metafile: none may remain external. */
export function checkMetafile(meta: Metafile): void {
  for (const [out, info] of Object.entries(meta.outputs)) {
    for (const imp of info.imports) {
      if (!imp.external) continue;
      throw new Error(`web build: ${out} keeps an external import of '${imp.path}' (${imp.kind}); browsers cannot load it`);
    }
  }
  const nodeInputs = Object.keys(meta.inputs).filter((p) => /node_modules\/(webgpu|pngjs)\//.test(p));
  if (nodeInputs.length) throw new Error(`web build: Node-only code reached the bundle: ${nodeInputs.join(', ')}`);
}

/** Builds the page into `outdir` (default dist/web). `entry` replaces main.ts (the tests use it to probe the guard). */
export async function buildWeb(opts: { outdir?: string; minify?: boolean; entry?: string } = {}): Promise<WebBuild> {
  const outdir = resolve(opts.outdir ?? join(root, 'dist/web'));
  mkdirSync(outdir, { recursive: true });
  const result = await build({
    absWorkingDir: root,
    entryPoints: { main: resolve(opts.entry ?? join(here, 'main.ts')) },
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome113', 'firefox141', 'safari26'], // the first releases with WebGPU on by default
    sourcemap: true,
    minify: !!opts.minify,
    metafile: true,
    logLevel: 'silent',
    plugins: [nodeOnlyGuard],
  }).catch((e: { errors?: { text: string; location?: { file: string; line: number } | null }[] }) => {
    const msgs = (e.errors ?? []).map((m) => (m.location ? `${m.location.file}:${m.location.line}: ` : '') + m.text);
    throw new Error(`web build failed:\n  ${msgs.join('\n  ') || String(e)}`);
  });
  checkMetafile(result.metafile!);
  copyFileSync(join(here, 'index.html'), join(outdir, 'index.html'));
  const bundle = join(outdir, 'main.js');
  return {
    outdir,
    files: [bundle, bundle + '.map', join(outdir, 'index.html')],
    bundleBytes: statSync(bundle).size,
    inputs: Object.keys(result.metafile!.inputs),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  const b = await buildWeb({ outdir: arg('--outdir'), minify: process.argv.includes('--minify') });
  console.log(`web build: ${relative(process.cwd(), b.outdir) || '.'}/main.js ${(b.bundleBytes / 1024).toFixed(0)} KiB from ${b.inputs.length} sources`);
}
