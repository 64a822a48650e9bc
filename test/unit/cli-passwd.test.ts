// `portside passwd --file`: the users file a running outside relay reads again when it changes
// (src/relay/clientport.ts), so it is replaced whole, never rewritten in place.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { UserFile } from '../../src/agent/users.js';

const cli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ps-passwd-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const passwd = (name: string, password: string, file: string) =>
  execFileSync(process.execPath, [cli, 'passwd', name, '--file', file], { env: { ...process.env, PORTSIDE_PASSWORD: password }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

describe('portside passwd --file', () => {
  it('adds and replaces users, mode 0600, by renaming a complete file over the old one', async () => {
    const file = join(dir, 'users.txt');
    passwd('alice', 'one', file);
    passwd('bob', 'two', file);
    const before = statSync(file).ino;
    passwd('alice', 'three', file);
    expect(statSync(file).ino, 'a new file, renamed over').not.toBe(before);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['users.txt']); // no temporary file left behind
    const users = new UserFile(file);
    expect(users.size).toBe(2);
    expect(await users.verify('alice', 'three')).toBe(true);
    expect(await users.verify('alice', 'one')).toBe(false);
    expect(await users.verify('bob', 'two')).toBe(true);
  });
});
