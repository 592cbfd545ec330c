// The published package as a user gets it: `npm pack` (prepack builds dist/lib), then the tarball installed into
// a fresh app in a temporary folder, used the ways a user would: plain `node`, `require()`, a strict TypeScript
// consumer (nodenext and bundler resolution), an esbuild browser bundle, and the `byol` command.
// The install is offline and needs no registry: the app depends on the tarball and on the repository's own copies
// of the package's runtime dependencies (the closure of its "dependencies" in package-lock.json, as file: links),
// so a dependency that the package uses but does not declare is missing there, as it would be for a user.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { PNG } from 'pngjs';

const t = suite('npm package');
const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const require = createRequire(import.meta.url);
const tsc = require.resolve('typescript/bin/tsc');

let dir = '';
let app = '';
let tarball = '';
let skip = '';

// Under `npm test`, npm's variables describe this repository (npm_config_local_prefix, npm_package_*): the app's
// npm must not see them. Settings of the machine's npm (cache, config files, certificates, proxies) stay.
const KEEP_NPM = /^npm_config_(cache|userconfig|globalconfig|cafile|registry|proxy|https_proxy|noproxy|strict_ssl)$/i;
const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) || KEEP_NPM.test(k)));
env.XDG_RUNTIME_DIR ??= '/tmp';

function run(cmd: string, args: string[], cwd: string, timeoutS: number): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: timeoutS * 1000, env });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  assert.ok(!r.error && r.status === 0, `${what}: exit ${r.status ?? r.signal ?? r.error?.message}\n${out.slice(-4000)}`);
  return r.stdout;
}

/** The package's runtime dependencies and theirs, by name, from the repository's lockfile. */
function dependencyClosure(deps: string[]): string[] {
  const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'));
  const seen = new Set<string>();
  const todo = [...deps];
  while (todo.length) {
    const name = todo.pop()!;
    if (seen.has(name)) continue;
    seen.add(name);
    const entry = lock.packages[`node_modules/${name}`];
    if (!entry) throw new Error(`package test: ${name} is not at the top of node_modules in package-lock.json`);
    todo.push(...Object.keys({ ...entry.dependencies, ...entry.optionalDependencies }));
  }
  return [...seen].sort();
}

t.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'byol-pkg-'));
  const pack = run('npm', ['pack', '--json', '--pack-destination', dir], root, 300);
  if ((pack.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    skip = 'npm is not on PATH, so the package cannot be packed';
    return;
  }
  // the prepack build prints before npm's JSON
  const packed = JSON.parse(ok(pack, 'npm pack').slice(pack.stdout.search(/^\[/m)))[0];
  tarball = join(dir, packed.filename);
  writeFileSync(join(dir, 'files.json'), JSON.stringify(packed.files.map((f: { path: string }) => f.path)));

  app = join(dir, 'app');
  mkdirSync(app);
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  // @types/node: what a Node consumer of the types has; it is no dependency of the package
  const links = dependencyClosure([...Object.keys(pkg.dependencies), '@types/node']);
  const dependencies: Record<string, string> = { 'byol-webgpu': `file:${tarball}` };
  for (const name of links) dependencies[name] = `file:${realpathSync(join(root, 'node_modules', name))}`;
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module', dependencies }, null, 2));
  ok(run('npm', ['install', '--offline', '--install-links=false', '--ignore-scripts', '--no-audit', '--no-fund'], app, 180), 'npm install of the tarball');
});

t.after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const skipped = () => (skip ? (console.log(`  (skipped: ${skip})`), true) : false);

t('the tarball holds the compiled library and its setup script, no tests, fixtures, benchmarks or sources', () => {
  if (skipped()) return;
  const files: string[] = JSON.parse(readFileSync(join(dir, 'files.json'), 'utf8'));
  const outside = files.filter((f) => !f.startsWith('dist/lib/') && !['package.json', 'README.md', 'LICENSE'].includes(f));
  assert.equal(outside, [], 'only dist/lib, package.json and README.md');
  assert.equal(files.filter((f) => /(^|\/)(test|bench|fixtures|\.ci|web)\//.test(f) || f.endsWith('.ts') && !f.endsWith('.d.ts')), []);
  for (const f of ['nn/index.js', 'nn/index.d.ts', 'nn/index.js.map', 'byol/index.js', 'byol/node.js', 'byol/bin.js', 'engine/setup.sh', 'engine/probe-adapter.mjs', 'no-dom.d.ts', 'package.json']) {
    assert.ok(files.includes(`dist/lib/${f}`), `dist/lib/${f} is in the tarball`);
  }
  const installed = JSON.parse(readFileSync(join(app, 'node_modules/byol-webgpu/package.json'), 'utf8'));
  assert.not.ok('uvu' in (installed.dependencies ?? {}), 'uvu is a devDependency');
});

t('plain node: import, one op on the adapter, and require() of every entry', () => {
  if (skipped()) return;
  writeFileSync(join(app, 'op.mjs'), `
import { getDevice, releaseDevice, tensor, matmul } from 'byol-webgpu';
const ctx = await getDevice();
const c = matmul(tensor([1, 2, 3, 4], [2, 2]), tensor([5, 6, 7, 8], [2, 2]));
console.log(JSON.stringify({ adapter: ctx.info.description || ctx.info.vendor, c: Array.from(await c.toArray()) }));
releaseDevice();
`);
  const out = JSON.parse(ok(run(process.execPath, ['op.mjs'], app, 120), 'node op.mjs').trim().split('\n').pop()!);
  assert.equal(out.c, [19, 22, 43, 50]);
  assert.ok(out.adapter, 'an adapter was named');
  // Node >= 20.19 loads ESM with require() when the graph has no top-level await
  writeFileSync(join(app, 'req.cjs'), `
const e = require('byol-webgpu'), b = require('byol-webgpu/byol'), n = require('byol-webgpu/node');
console.log([typeof e.getDevice, typeof e.matmul, typeof b.BYOL, typeof n.train].join(' '));
`);
  const [major, minor] = process.versions.node.split('.').map(Number);
  const r = run(process.execPath, ['req.cjs'], app, 60);
  if (major > 20 || (major === 20 && minor >= 19)) assert.is(ok(r, 'node req.cjs').trim(), 'function function function function');
  else assert.match(r.stderr, /ERR_REQUIRE_ESM|require\(\) of ES Module/);
});

t('strict TypeScript consumers type-check against the declarations: nodenext without the DOM lib, and bundler', () => {
  if (skipped()) return;
  const strict = { strict: true, noUncheckedIndexedAccess: true, exactOptionalPropertyTypes: true, skipLibCheck: false, noEmit: true, target: 'ES2022' };
  const use = `
import { getDevice, releaseDevice, tensor, matmul, type GpuContext } from 'byol-webgpu';
import { BYOL, ResNet, syntheticShapes, type BYOLConfig } from 'byol-webgpu/byol';
const ctx: GpuContext = await getDevice();
const device: GPUDevice = ctx.device;
const v: Float32Array | Int32Array | Uint32Array = await matmul(tensor([1, 2], [1, 2]), tensor([3, 4], [2, 1])).toArray();
const cfg: Partial<BYOLConfig> = { batchSize: 8 };
console.log(device.label, v, cfg, BYOL, ResNet, syntheticShapes(4, 8).n);
releaseDevice();
`;
  // Node: no DOM lib; byol-webgpu/no-dom declares the DOM names that @webgpu/types mentions
  writeFileSync(join(app, 'node-consumer.ts'), `/// <reference types="byol-webgpu/no-dom" />\n${use}
import { train, loadDataset, type TrainOptions } from 'byol-webgpu/node';
const o: Partial<TrainOptions> = { epochs: 1 };
console.log(o, train, loadDataset);
`);
  writeFileSync(join(app, 'tsconfig.node.json'), JSON.stringify({ compilerOptions: { ...strict, module: 'nodenext', moduleResolution: 'nodenext', lib: ['ES2022'], types: ['node'] }, files: ['node-consumer.ts'] }));
  ok(run(process.execPath, [tsc, '-p', 'tsconfig.node.json'], app, 180), 'tsc, nodenext consumer');
  // a browser app: the DOM lib, no Node types
  writeFileSync(join(app, 'web-consumer.ts'), use);
  writeFileSync(join(app, 'tsconfig.web.json'), JSON.stringify({ compilerOptions: { ...strict, module: 'esnext', moduleResolution: 'bundler', lib: ['ES2022', 'DOM'], types: [] }, files: ['web-consumer.ts'] }));
  ok(run(process.execPath, [tsc, '-p', 'tsconfig.web.json'], app, 180), 'tsc, bundler consumer');
});

t('a plain esbuild browser bundle of every browser entry: no externals, nothing Node-only inside', async () => {
  if (skipped()) return;
  writeFileSync(join(app, 'web.js'), "export * from 'byol-webgpu';\nexport * as byol from 'byol-webgpu/byol';\n");
  const r = await build({ absWorkingDir: app, entryPoints: ['web.js'], bundle: true, platform: 'browser', format: 'esm', outfile: 'out/web.js', metafile: true, logLevel: 'silent' });
  const inputs = Object.keys(r.metafile.inputs);
  assert.ok(inputs.some((p) => p.endsWith('byol-webgpu/dist/lib/engine/node-gpu.browser.js')), 'the browser stub of #node-gpu');
  assert.equal(inputs.filter((p) => /node_modules\/(webgpu|pngjs|debug)\/|engine\/(node-gpu|lavapipe)\.js$|byol\/(node|train|cli|bin)\.js$/.test(p)), []);
  for (const out of Object.values(r.metafile.outputs)) assert.equal(out.imports.filter((i) => i.external), [], 'no external imports');
  const js = readFileSync(join(app, 'out/web.js'), 'utf8');
  assert.not.match(js, /(from|import\(|require\()\s*["'](node:|webgpu["'])/);
  const denied = await build({ absWorkingDir: app, stdin: { contents: "import 'byol-webgpu/node';", resolveDir: app }, bundle: true, platform: 'browser', write: false, logLevel: 'silent' }).then(() => '', (e: Error) => e.message);
  assert.match(denied, /byol-webgpu\/node/, 'byol-webgpu/node is refused under the browser condition');
});

t('npx byol --help and npx byol setup, through the .bin symlink, without tsx', () => {
  if (skipped()) return;
  assert.ok(!existsSync(join(app, 'node_modules/tsx')));
  const help = ok(run('npx', ['--no', '--', 'byol', '--help'], app, 60), 'npx byol --help');
  assert.match(help, /^usage: byol train \[flags\]/);
  assert.match(help, /byol setup \[--data\] \[--browser\]/);
  const bad = run('npx', ['--no', '--', 'byol', 'fly'], app, 60);
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /unknown command 'fly'/);
  // the adapter is there (npm test's pretest made sure), so setup only finds it: the shipped script and probe run
  assert.match(ok(run('npx', ['--no', '--', 'byol', 'setup'], app, 120), 'npx byol setup'), /setup: WebGPU adapter found/);
  const flag = run('npx', ['--no', '--', 'byol', 'setup', '--dat'], app, 60);
  assert.is(flag.status, 2);
  assert.match(flag.stderr, /unknown flag --dat/);
});

t('npx byol train: 2 steps on a PNG folder the test writes, with every output', () => {
  if (skipped()) return;
  for (const split of ['train', 'test']) {
    for (const [c, cls] of ['dark', 'light'].entries()) {
      mkdirSync(join(app, 'data', split, cls), { recursive: true });
      for (let i = 0; i < 8; i++) {
        const png = new PNG({ width: 16, height: 16 });
        for (let p = 0; p < 256; p++) {
          const v = (c ? 160 : 40) + ((p * 7 + i * 13) % 64);
          png.data.set([v, v, v, 255], p * 4);
        }
        writeFileSync(join(app, 'data', split, cls, `${i}.png`), PNG.sync.write(png));
      }
    }
  }
  const args = ['--data', 'folder', '--data-path', 'data', '--out', 'run', '--max-steps', '2', '--batch', '8', '--width', '4', '--proj-hidden', '16', '--proj-dim', '8', '--pred-hidden', '16', '--log-every', '1', '--checkpoint-every', '1', '--no-eval'];
  const out = ok(run('npx', ['--no', '--', 'byol', 'train', ...args], app, 300), 'npx byol train');
  const report = JSON.parse(out.slice(out.indexOf('{')));
  assert.is(report.steps, 2);
  assert.ok(Number.isFinite(report.final_loss), `final loss ${report.final_loss}`);
  const files = readdirSync(join(app, 'run')).sort();
  assert.equal(files, ['augmentations.png', 'checkpoints', 'config.json', 'encoder.safetensors', 'final.json', 'loss-curve.png', 'metrics.jsonl']);
  assert.is(readFileSync(join(app, 'run/metrics.jsonl'), 'utf8').trim().split('\n').length, 2);
  assert.ok(readdirSync(join(app, 'run/checkpoints')).includes('ckpt-2.safetensors'));
});

t.run();
