// Runs the page's checks (byol/checks.ts) in Node, on Dawn's default adapter or on Chromium's SwiftShader: Dawn
// loads Chromium's libvk_swiftshader.so as a Vulkan driver and gets the browser test's adapter (subgroups of 4,
// 256 invocations, no shader-f16) without a browser, which makes a kernel that fails there quick to find.
// Usage: tsx test/browser/node-checks.ts [--swiftshader] [--filter TEXT] [--skip F,G]
// Ends with "N passed, N failed"; exits 1 on any failure. Some kernels take minutes and gigabytes of memory to
// compile on SwiftShader: watch the process when adding kernels.

import { existsSync } from 'node:fs';

const argv = process.argv.slice(2);
const arg = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
if (argv.includes('--swiftshader')) {
  if (!existsSync(SWIFTSHADER_ICD)) throw new Error(`no SwiftShader at ${SWIFTSHADER_ICD}: run 'bash engine/setup.sh --browser' (installs Debian's chromium)`);
  // read by the Vulkan loader when Dawn creates its instance, so it must be set before getDevice()
  process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
}
const filter = arg('--filter') ?? '';
const skip = (arg('--skip') ?? '').split(',').filter(Boolean);

const { getDevice, releaseDevice, clearTape } = await import('../../nn/index.ts');
const { checkFamilies } = await import('../../byol/checks.ts');
const ctx = await getDevice();
const ai: any = (ctx.adapter as any).info ?? {};
console.log(`adapter: ${ctx.info.vendor}/${ctx.info.architecture}; subgroups ${ctx.hasSubgroups ? `${ai.subgroupMinSize}..${ai.subgroupMaxSize}` : 'no'}, ` +
  `${ctx.info.limits.maxComputeInvocationsPerWorkgroup} invocations, shader-f16 ${ctx.hasF16 ? 'yes' : 'no'}`);
let passed = 0;
let failed = 0;
const t00 = performance.now();
for (const [family, list] of Object.entries(checkFamilies)) {
  if (skip.includes(family)) continue;
  for (const c of list) {
    if (!`${family} ${c.name}`.includes(filter)) continue;
    const t0 = performance.now();
    try {
      await c.run();
      passed++;
      console.log(`✓ ${family}: ${c.name}  (${(performance.now() - t0).toFixed(0)} ms)`);
    } catch (e) {
      failed++;
      clearTape();
      console.log(`✗ ${family}: ${c.name}  (${(performance.now() - t0).toFixed(0)} ms)\n    ${(e as Error)?.message ?? e}`);
    }
  }
}
console.log(`checks took ${((performance.now() - t00) / 1000).toFixed(1)} s`);
console.log(`${passed} passed, ${failed} failed`);
releaseDevice();
process.exitCode = failed || passed === 0 ? 1 : 0;
