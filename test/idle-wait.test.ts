// Waiting for the GPU asleep (engine/idle-wait.ts): Dawn's Node binding polls its events in a setImmediate loop
// while a GPU promise is pending, so without the idle wait the main thread spins for as long as the GPU works.

import { readFileSync, existsSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { getDevice, releaseDevice, tensor, matmul, sync } from '../nn/index.ts';
import { isCpuAdapter } from '../engine/device.ts';
import { idleWhile, idleWaitState, setIdleWait } from '../engine/idle-wait.ts';

const t = suite('idle-wait');

const tick = () => new Promise<void>((r) => setImmediate(r));
const after = <T>(ms: number, v: T) => new Promise<T>((r) => setTimeout(() => r(v), ms));

/** CPU seconds of this process's main thread (Linux: /proc/self/task/<pid>/stat, utime + stime in clock ticks). */
function mainThreadCpuSeconds(): number {
  const fields = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

t('a CPU adapter (lavapipe here) gets the idle wait; the adapter is named as a CPU one', async () => {
  const ctx = await getDevice();
  assert.ok(isCpuAdapter(ctx.info), `expected a CPU adapter, got '${ctx.info.description}'`);
  assert.ok(idleWaitState().enabled);
  assert.not.ok(isCpuAdapter({ ...ctx.info, description: 'NVIDIA H100', architecture: 'hopper', vendor: 'nvidia', isFallback: false }));
});

t('idleWhile passes values and rejections through, and its loop ends with the last wait', async () => {
  await getDevice();
  const a = idleWhile(after(30, 'a'));
  const b = idleWhile(after(10, 0).then(() => Promise.reject(new Error('b failed'))));
  assert.equal(idleWaitState().waiting, 2);
  assert.ok(idleWaitState().looping);
  await b.then(() => assert.unreachable('b should reject'), (e) => assert.is((e as Error).message, 'b failed'));
  assert.equal(idleWaitState().waiting, 1);
  assert.is(await a, 'a');
  assert.equal(idleWaitState().waiting, 0);
  await tick();
  await tick();
  assert.not.ok(idleWaitState().looping, 'the nap loop must stop when nothing is awaited (else Node never exits)');
});

t('turned off, idleWhile hands the promise back untouched and starts no loop', async () => {
  await getDevice();
  setIdleWait(false);
  try {
    const p = after(5, 1);
    assert.is(idleWhile(p), p);
    assert.equal(idleWaitState(), { enabled: false, waiting: 0, looping: false });
    await p;
  } finally {
    setIdleWait(true);
  }
});

t('releaseDevice() during a wait ends it: the loop stops though Dawn never answers', async () => {
  await getDevice();
  const x = tensor(new Float32Array(512 * 512).fill(0.5), [512, 512]);
  const y = matmul(matmul(x, x), x);
  const waiting = sync();
  assert.ok(idleWaitState().waiting >= 1);
  releaseDevice();
  await waiting.then(() => {}, () => {});
  assert.equal(idleWaitState().waiting, 0);
  await tick();
  await tick();
  assert.not.ok(idleWaitState().looping);
  void y;
});

if (existsSync(`/proc/self/task/${process.pid}/stat`)) {
  t('the main thread sleeps while the GPU works (Dawn alone spins it)', async () => {
    await getDevice();
    const x = tensor(new Float32Array(768 * 768).fill(0.01), [768, 768]);
    const busy = async (): Promise<number> => {
      let y = x.share();
      for (let i = 0; i < 12; i++) {
        const z = matmul(y, x);
        y.dispose();
        y = z;
      }
      const c0 = mainThreadCpuSeconds();
      const w0 = performance.now();
      await sync();
      const share = (mainThreadCpuSeconds() - c0) / ((performance.now() - w0) / 1000);
      y.dispose();
      return share;
    };
    await busy(); // compiles
    const asleep = await busy();
    setIdleWait(false);
    let spinning: number;
    try {
      spinning = await busy();
    } finally {
      setIdleWait(true);
    }
    x.dispose();
    assert.ok(asleep < 0.3, `main thread busy ${(asleep * 100).toFixed(0)}% of a sync with the idle wait (expected < 30%)`);
    assert.ok(spinning > asleep, `without the idle wait ${(spinning * 100).toFixed(0)}%, with it ${(asleep * 100).toFixed(0)}%`);
  });
}

t.after(() => releaseDevice());
t.run();
