// Assertions on error messages, shared by every test file that checks "the error names the op and the shapes".
import * as assert from 'uvu/assert';

const has = (msg: string, p: string | RegExp) => (typeof p === 'string' ? msg.includes(p) : p.test(msg));

/** fn must throw an Error whose message contains every part (substrings or patterns). */
export function throwsWith(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(fn, (e: Error) => parts.every((p) => has(e.message, p)) || (console.error('message was:', e.message), false));
}

/** p must reject with an Error whose message contains every part. */
export async function rejectsWith(p: Promise<unknown>, ...parts: (string | RegExp)[]): Promise<void> {
  try {
    await p;
  } catch (e) {
    const msg = (e as Error).message;
    if (!parts.every((q) => has(msg, q))) assert.unreachable(`error message '${msg}' lacks one of ${parts.map(String).join(', ')}`);
    return;
  }
  assert.unreachable('expected a rejection');
}
