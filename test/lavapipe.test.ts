// The lavapipe width a process starts with: the user's LP_NATIVE_VECTOR_WIDTH, else the one bench/lane-width.ts
// measured fastest for the BYOL step on this CPU (its cache), else the driver's default. Each case runs in a fresh
// child process, since the width is fixed before Dawn loads the driver.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuModel } from '../engine/lavapipe.ts';

const t = suite('lavapipe');

function startWith(env: Record<string, string | undefined>): { config: { vectorWidth: number | null; note: string }; envWidth: string } {
  const code = "import('./engine/lavapipe.ts').then(async (m) => { const c = await m.configureLavapipe(); console.log(JSON.stringify({ config: c, envWidth: process.env.LP_NATIVE_VECTOR_WIDTH ?? '' })); })";
  const clean = { ...process.env };
  delete clean.LP_NATIVE_VECTOR_WIDTH;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', code], { env: { ...clean, ...env }, encoding: 'utf8', cwd: process.cwd() });
  assert.is(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

t('the measured width is used, the user\'s variable wins, and without either the default stays', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'byol-lp-'));
  try {
    assert.is(startWith({ BYOL_WEBGPU_CACHE_DIR: dir }).config.vectorWidth, null, 'no measurement: the driver default');
    writeFileSync(join(dir, 'lavapipe-width.json'), JSON.stringify({ [await cpuModel()]: { width: 512 } }));
    const measured = startWith({ BYOL_WEBGPU_CACHE_DIR: dir });
    assert.is(measured.config.vectorWidth, 512);
    assert.is(measured.envWidth, '512', 'the driver gets it through LP_NATIVE_VECTOR_WIDTH');
    assert.match(measured.config.note, 'measured fastest');
    const user = startWith({ BYOL_WEBGPU_CACHE_DIR: dir, LP_NATIVE_VECTOR_WIDTH: '256' });
    assert.is(user.config.vectorWidth, 256);
    assert.match(user.config.note, 'set by the user');
    writeFileSync(join(dir, 'lavapipe-width.json'), JSON.stringify({ 'another CPU': { width: 512 } }));
    assert.is(startWith({ BYOL_WEBGPU_CACHE_DIR: dir }).config.vectorWidth, null, 'a measurement on another CPU does not apply');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

t.run();
