// The GPU-machine scripts (engine/device-pack.sh, device-check.sh, gpu-check.sh and the helper they share): they
// parse, and device-check.sh refuses clearly, before touching anything, where .devpack was not packed or a flag is
// unknown. Their real run needs a GPU machine (README, "GPU"); `device-check.sh --any-adapter` is its dry run here.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, copyFileSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

const t = suite('device-scripts');
const scripts = ['engine/device-pack.sh', 'engine/device-check.sh', 'engine/gpu-check.sh', 'engine/nvidia-vulkan.sh'];

t('every script parses (bash -n)', () => {
  for (const s of scripts) {
    const r = spawnSync('bash', ['-n', s], { encoding: 'utf8' });
    assert.is(r.status, 0, `${s}: ${r.stderr}`);
  }
});

t('device-check.sh without .devpack says how to make it, and writes its log where OUT points', () => {
  const root = mkdtempSync(join(tmpdir(), 'byol-device-check-'));
  try {
    mkdirSync(join(root, 'engine'));
    for (const s of ['engine/device-check.sh', 'engine/nvidia-vulkan.sh']) copyFileSync(s, join(root, s));
    const out = join(root, 'out');
    const r = spawnSync('bash', ['engine/device-check.sh'], { cwd: root, encoding: 'utf8', env: { ...process.env, OUT: out } });
    assert.is(r.status, 1);
    assert.match(r.stdout, /no \.devpack here: run engine\/device-pack\.sh/);
    assert.ok(existsSync(join(out, 'device-check.txt')), 'the log is under OUT');
    const bad = spawnSync('bash', ['engine/device-check.sh', '--budjet', '9'], { cwd: root, encoding: 'utf8', env: { ...process.env, OUT: out } });
    assert.is(bad.status, 2);
    assert.match(bad.stderr, /unknown flag --budjet/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

t.run();
