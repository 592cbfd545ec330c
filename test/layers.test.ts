// The layers the README describes, checked on the source: engine (the core) < kernels < nn < byol. A file may
// import its own layer or a lower one, never a higher one, and no set of files may import each other in a
// circle. bench/ and test/ sit on top and are not checked.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const LAYERS = ['engine', 'kernels', 'nn', 'byol'];

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (/\.(ts|mts|mjs)$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

// package.json "imports" (#name -> file): an edge like any relative import, to the file Node resolves by default
const subpathImports: Record<string, string> = Object.fromEntries(
  Object.entries(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).imports ?? {}).map(([k, v]) => [k, typeof v === 'string' ? v : (v as any).default]),
);

/** Relative and package-internal (#) imports of a file (static, dynamic and re-exports), as repository paths. */
export function importsOf(file: string, text: string): string[] {
  const out: string[] = [];
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const re = /(?:^|[^\w.])(?:import|export)\s*(?:type\s+)?(?:[^'"`;]*?\sfrom\s*)?\(?\s*['"](\.\.?\/[^'"]+|#[^'"]+)['"]/gm;
  for (const m of code.matchAll(re)) {
    const spec = m[1].startsWith('#') ? subpathImports[m[1]] : m[1];
    if (!spec) throw new Error(`${relative(root, file)} imports ${m[1]}, which package.json "imports" does not define`);
    out.push(m[1].startsWith('#') ? relative(root, resolve(root, spec)) : relative(root, resolve(dirname(file), spec)));
  }
  return out;
}

function layerOf(path: string): number {
  return LAYERS.indexOf(path.split('/')[0]);
}

/** Strongly connected components with more than one file (or a file importing itself): the import circles. */
export function circles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return out;
}

function libraryGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const layer of LAYERS) {
    for (const f of sources(join(root, layer))) graph.set(relative(root, f), importsOf(f, readFileSync(f, 'utf8')));
  }
  return graph;
}

const t = suite('layers');

t('the import scanner sees static, type, dynamic and re-export imports', () => {
  const f = join(root, 'kernels/x.ts');
  const text = [
    "import { a } from '../engine/tensor.ts';",
    "import type { B } from './matmul.ts';",
    "export { c } from '../nn/module.ts';",
    "const m = await import('../byol/train.ts');",
    "import './side-effect.ts';",
    "import { nodeGpu } from '#node-gpu';",
    "// not an import: from '../nowhere.ts'",
  ].join('\n');
  assert.equal(importsOf(f, text), ['engine/tensor.ts', 'kernels/matmul.ts', 'nn/module.ts', 'byol/train.ts', 'kernels/side-effect.ts', 'engine/node-gpu.ts']);
});

t('the circle finder finds a circle and ignores a chain', () => {
  const g = new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']]]);
  assert.equal(circles(g), [['a', 'b', 'c']]);
  assert.equal(circles(new Map([['a', ['b']], ['b', []]])), []);
});

t('engine < kernels < nn < byol: no file imports from a higher layer', () => {
  const bad: string[] = [];
  for (const [file, deps] of libraryGraph()) {
    for (const d of deps) {
      const [lf, ld] = [layerOf(file), layerOf(d)];
      if (ld < 0) bad.push(`${file} imports ${d}, outside the library layers`);
      else if (ld > lf) bad.push(`${file} (${LAYERS[lf]}) imports ${d} (${LAYERS[ld]})`);
    }
  }
  assert.equal(bad, [], bad.join('\n'));
});

t('no import circles in engine/, kernels/, nn/ or byol/', () => {
  const found = circles(libraryGraph());
  assert.equal(found, [], found.map((c) => c.join(' -> ')).join('\n'));
});

t.run();
