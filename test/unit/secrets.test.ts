import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadInsideConfig, loadOutsideConfig } from '../../src/config.js';
import { loadClientConfig } from '../../src/agent/config.js';
import { clientSecrets, insideSecrets, outsideSecrets, warnReadableSecrets } from '../../src/secrets.js';
import { logSink } from '../support/outside.js';

const dir = mkdtempSync(join(tmpdir(), 'portside-secrets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const KEY = Buffer.alloc(32, 7).toString('base64');
const put = (name: string, text: string, mode = 0o600) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  chmodSync(p, mode);
  return p;
};

describe('secret files', () => {
  it('names each config\'s secrets: key files, the client port\'s key and users file, a config with a key or password in it', () => {
    put('a.key', KEY);
    const outside = loadOutsideConfig(put('outside.yaml', [
      'listen: 127.0.0.1:0',
      `insides: [{name: a, key_file: a.key}, {name: b, key: "${KEY}"}]`,
      'clients: {listen: "127.0.0.1:0", cert_file: c.pem, key_file: c.key, auth: users, users_file: users}',
    ].join('\n')));
    expect(outsideSecrets(outside)).toEqual([join(dir, 'a.key'), join(dir, 'outside.yaml'), join(dir, 'c.key'), join(dir, 'users')]);
    const inside = loadInsideConfig(put('inside.yaml', ['name: a', 'key_file: a.key', 'outside: 127.0.0.1:7000', 'firewall: {socks5: "127.0.0.1:1080", username: u, password: p}'].join('\n')));
    expect(insideSecrets(inside)).toEqual([join(dir, 'a.key'), join(dir, 'inside.yaml')]);
    const base = ['outside: 127.0.0.1:7100', `outside_fingerprint: "sha256:${'ab'.repeat(32)}"`, 'username: alice'];
    expect(clientSecrets(loadClientConfig(put('c1.yaml', [...base, 'password: x'].join('\n'))))).toEqual([join(dir, 'c1.yaml')]);
    expect(clientSecrets(loadClientConfig(put('c2.yaml', base.join('\n')), undefined, { PORTSIDE_PASSWORD: 'x' }))).toEqual([]);
  });

  it('warns for a file group or others may read, with its mode and the fix; not for 0600 or a file that is gone', () => {
    const open = put('open.key', KEY, 0o644);
    const group = put('group.key', KEY, 0o640);
    const closed = put('closed.key', KEY, 0o600);
    const { lines, log } = logSink();
    warnReadableSecrets([open, group, closed, join(dir, 'missing.key')], log);
    expect(lines.map((l) => [l.event, l.file, l.mode])).toEqual([
      ['config.secret_readable', open, '0644'],
      ['config.secret_readable', group, '0640'],
    ]);
    expect(lines[0]!.msg).toBe(`${open} holds a secret and others may read it (mode 0644): chmod 600 ${open}`);
  });
});
