// wgsl-preprocessor ships plain JS without types.
declare module 'wgsl-preprocessor/wgsl-preprocessor.js' {
  /** Template tag resolving #if/#elif/#else/#endif on interpolated booleans. */
  export function wgsl(strings: TemplateStringsArray, ...values: unknown[]): string;
}
