import { suite } from 'uvu';
import { opTest } from './helpers/gradcheck.ts';
import { elementwiseCases } from '../nn/checks/elementwise.ts';

const t = suite('elementwise');

// the cases live in nn/checks/ so that the browser page runs the same checks
for (const { name, ...c } of elementwiseCases) opTest(name, c, t);

t.run();
