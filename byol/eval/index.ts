// Evaluation of learned representations on the GPU: feature extraction, the kNN monitor and the linear probe.

export { extractFeatures, type ExtractOptions } from './features.ts';
export { knnAccuracy, knnPredict, l2NormalizeRows, type KnnOptions } from './knn.ts';
export { linearProbe, type LinearProbeOptions, type LinearProbeResult } from './linear-probe.ts';
export type { Labels } from './check.ts';
export { convergedLinearProbe, fitLogisticRegression, lbfgs, DEFAULT_L2_GRID, type ConvergedProbeOptions, type ConvergedProbeResult, type LogRegFit, type LogRegFitOptions, type LbfgsOptions } from './logreg.ts';
