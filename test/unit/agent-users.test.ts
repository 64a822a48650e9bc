import { describe, expect, it } from 'vitest';
import { UserFile, hashUserLine, parseUsers } from '../../src/agent/users.js';
import { normalizeFingerprint } from '../../src/agent/cert.js';

const FAST = { N: 1024, r: 8, p: 1 };

describe('users file (clients.auth: users)', () => {
  it('hashes with scrypt and a random salt; verifies only the right password', async () => {
    const a = await hashUserLine('alice', 'correct horse');
    const b = await hashUserLine('alice', 'correct horse');
    expect(a).toMatch(/^alice:scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    expect(a).not.toBe(b); // salted
    expect(a).not.toContain('correct horse');
    const users = new UserFile('users.txt', `# comment\n${a}\n${await hashUserLine('bob', 'pw', FAST)}\n`);
    expect(users.size).toBe(2);
    expect(await users.verify('alice', 'correct horse')).toBe(true);
    expect(await users.verify('alice', 'correct horse')).toBe(true); // from the verified cache
    expect(await users.verify('alice', 'correct horsE')).toBe(false);
    expect(await users.verify('alice', '')).toBe(false);
    expect(await users.verify('bob', 'pw')).toBe(true);
    expect(await users.verify('bob', 'correct horse')).toBe(false);
    expect(await users.verify('carol', 'pw')).toBe(false);
  });

  it('reload() takes a new table and forgets verified passwords; a broken one throws and the old table stays', async () => {
    const users = new UserFile('u.txt', `${await hashUserLine('alice', 'a', FAST)}\n`);
    expect(await users.verify('alice', 'a')).toBe(true);
    users.reload(`${await hashUserLine('bob', 'b', FAST)}\n`);
    expect(users.size).toBe(1);
    expect(await users.verify('alice', 'a')).toBe(false); // not from the cache of the old table
    expect(await users.verify('bob', 'b')).toBe(true);
    expect(() => users.reload('bob:plain\n')).toThrow(/u\.txt:1: expected name:scrypt/);
    expect(await users.verify('bob', 'b')).toBe(true);
    expect(users.size).toBe(1);
  });

  it('refuses malformed lines with file and line', async () => {
    const good = await hashUserLine('a', 'x', FAST);
    expect(() => parseUsers(`${good}\nb:plain-password\n`, 'u.txt')).toThrow(/u\.txt:2: expected name:scrypt/);
    expect(() => parseUsers(`${good}\n${good}\n`, 'u.txt')).toThrow(/listed twice/);
    expect(() => parseUsers('a:scrypt$1000$8$1$AAAA$BBBB\n', 'u.txt')).toThrow(/parameters/);
    await expect(hashUserLine('bad:name', 'x')).rejects.toThrow(/without ':'/);
  });

  it('fingerprints: colon, sha256: and plain forms are the same', () => {
    const hex = 'ab'.repeat(32);
    expect(normalizeFingerprint(hex)).toBe(hex);
    expect(normalizeFingerprint(`sha256:${hex.toUpperCase()}`)).toBe(hex);
    expect(normalizeFingerprint(hex.match(/../g)!.join(':'))).toBe(hex);
    expect(() => normalizeFingerprint('abcd')).toThrow(/SHA-256/);
  });
});
