// Every benchmark row, in the order bench/run.ts prints them. Add a kernel family's rows here.

import type { BenchCase } from '../case.ts';
import { matmulCases } from './matmul.ts';
import { convCases } from './conv.ts';
import { byolStepCases } from './byol-step.ts';
import { trainOpCases } from './train-ops.ts';

export const allCases: BenchCase[] = [...matmulCases, ...convCases, ...trainOpCases, ...byolStepCases];
