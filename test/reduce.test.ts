import { suite } from 'uvu';
import { opTest } from './helpers/gradcheck.ts';
import { reduceCases } from '../nn/checks/reduce.ts';

const t = suite('reduce');

// the cases live in nn/checks/ so that the browser page runs the same checks
for (const { name, ...c } of reduceCases) opTest(name, c, t);

t.run();
