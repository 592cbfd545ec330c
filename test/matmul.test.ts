import { suite } from 'uvu';
import { opTest } from './helpers/gradcheck.ts';
import { matmulCases } from './cases/matmul.ts';

const t = suite('matmul');

// the cases live in test/cases/ so that the browser page runs the same checks
for (const { name, ...c } of matmulCases) opTest(name, c, t);

t.run();
