/**
 * newKeyShare() many times over in a process of its own, with garbage being made alongside.
 * Node 20 can deadlock when a key it generated is exported while a GC finalises the generating
 * job (src/session/seal.ts); with generateKeyPairSync + JWK export this loop hung within 65 000
 * keys in each of several tries here. A hung child is killed by the timeout and fails the test.
 * It runs the built code (`npm test` builds first).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const built = fileURLToPath(new URL('../../dist/session/seal.js', import.meta.url));

describe('key shares', () => {
  it('100 000 fresh key shares in a row do not hang the process, and each agrees with a peer', () => {
    expect(existsSync(built), 'dist/ is missing: run `npm run build` (npm test does)').toBe(true);
    const script = `
      const { newKeyShare, deriveStreamKeys } = await import(${JSON.stringify(built)});
      let junk = [], shares = new Set();
      for (let i = 0; i < 100000; i++) {
        const k = newKeyShare();
        if (i % 1000 === 0) shares.add(k.share.toString('hex'));
        junk.push(new Array(10)); if (junk.length > 1000) junk = [];
      }
      const a = newKeyShare(), b = newKeyShare();
      const ka = deriveStreamKeys(a, b.share, 'client'), kb = deriveStreamKeys(b, a.share, 'client-port');
      console.log(JSON.stringify({ distinct: shares.size, agree: ka.send.equals(kb.recv) && ka.recv.equals(kb.send) }));
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.signal, 'the key-share loop hung and was killed').toBeNull();
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ distinct: 100, agree: true });
  }, 70_000);
});
