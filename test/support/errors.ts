import { expect } from 'vitest';

/** The code of the error `fn` throws, checked to be a `cls` (undefined if it does not throw). */
export function codeOf(fn: () => unknown, cls: abstract new (...args: never[]) => Error & { code: string }): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(cls);
    return (err as { code: string }).code;
  }
  return undefined;
}
