// Side by side, the tfjs and torch ratios of several `npm run bench --json` files (rows matched by name and
// shape): the median-based ratio the bench reports and the ratio of the two engines' fastest samples, which moves
// less while a row's medians are bimodal. Usage: npx tsx bench/compare-runs.ts A.json B.json ... > table.md

import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

interface Row {
  name: string;
  shape: string;
  ratio?: number | null;
  ours_min_ms?: number;
  peer_min_ms?: number;
  foreign_cpu_pct?: number;
  ratio_torch?: number | null;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: npx tsx bench/compare-runs.ts RUN.json [RUN.json ...]');
  process.exit(2);
}
const runs = files.map((f) => new Map((JSON.parse(readFileSync(f, 'utf8')).rows as Row[]).map((r) => [`${r.name} | ${r.shape}`, r])));
const keys = [...new Set(runs.flatMap((m) => [...m.keys()]))];
const x = (v: number | null | undefined) => (v == null || !Number.isFinite(v) ? '-' : `${v.toFixed(1)}x`);
const minRatio = (r?: Row) => (r?.peer_min_ms && r.ours_min_ms ? r.peer_min_ms / r.ours_min_ms : null);

console.log(`| op | shape | ${files.map((f) => `${basename(f)}: tfjs ratio (median / min), foreign CPU %`).join(' | ')} |`);
console.log(`|---|---|${files.map(() => '---').join('|')}|`);
for (const k of keys) {
  const rows = runs.map((m) => m.get(k));
  if (rows.every((r) => r?.ratio == null)) continue;
  const cells = rows.map((r) => (r ? `${x(r.ratio)} / ${x(minRatio(r))}, ${r.foreign_cpu_pct == null ? '-' : r.foreign_cpu_pct.toFixed(0)}${r.ratio_torch == null ? '' : `; torch ${r.ratio_torch.toFixed(2)}x`}` : '-'));
  console.log(`| ${k} | ${cells.join(' | ')} |`);
}
