import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { detectConfigKind, insideRelayConfigs, loadInsideConfig, loadOutsideConfig, splitHostPort, joinHostPort } from '../../src/config.js';
import { ConfigError, ErrorCode } from '../../src/errors.js';
import { loadClientConfig } from '../../src/agent/config.js';

const dir = mkdtempSync(join(tmpdir(), 'portside-config-'));
const KEY = Buffer.alloc(32, 7).toString('base64');
writeFileSync(join(dir, 'branch-a.key'), KEY + '\n', { mode: 0o600 });

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

/** Load and return the ConfigError (fails the test if the file loads). */
function refuse(kind: 'inside' | 'outside', name: string, text: string): ConfigError {
  const p = file(name, text);
  try {
    (kind === 'inside' ? loadInsideConfig : loadOutsideConfig)(p);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as ConfigError).code).toBe(ErrorCode.CONFIG);
    expect((e as Error).message.startsWith(p)).toBe(true); // names the file
    return e as ConfigError;
  }
  throw new Error(`${name} was accepted`);
}

const GOOD_OUTSIDE = `listen: 127.0.0.1:7000            # sessions from inside relays
insides:
  - name: branch-a
    key_file: branch-a.key
  - name: branch-b
    key: ${Buffer.alloc(16, 1).toString('base64')}
allow:
  hosts: [127.0.0.1]
  ports: ["10000-60000", 8080]
  from: ["127.0.0.0/8", "::1"]
log_level: info
`;

const GOOD_INSIDE = `name: branch-a
key_file: branch-a.key
outside: 127.0.0.1:7000
firewall:
  socks5: 127.0.0.1:1080
  username: alice
  password: secret
services:
  - name: web
    listen: 127.0.0.1:18080
    target: 127.0.0.1:8080
  - name: ftp
    listen: "[::1]:2121"
    target: ftp.intranet.example:21
    rules: ftp
rules_dir: ./rules
log_level: info
`;

describe('config: good files', () => {
  it('an outside config parses, with keys read and defaults filled', () => {
    const c = loadOutsideConfig(file('outside.yaml', GOOD_OUTSIDE));
    expect(c.listen).toBe('127.0.0.1:7000');
    expect([...c.keys.keys()]).toEqual(['branch-a', 'branch-b']);
    expect(c.keys.get('branch-a')!.equals(Buffer.alloc(32, 7))).toBe(true);
    expect(c.allow.ports).toEqual(['10000-60000', 8080]);
    expect(c.limits).toEqual({
      handshake_timeout_ms: 10_000, max_pending_handshakes: 64, keepalive_interval_ms: 15_000,
      keepalive_timeout_ms: 45_000, connect_timeout_ms: 10_000, max_streams: 65_536,
      idle_timeout_ms: 0, half_close_timeout_ms: 300_000, tcp_keepalive_ms: 60_000, service_handover_ms: 2_000, shutdown_grace_ms: 10_000, handshake_rate: 20, handshake_burst: 100,
    });
    expect(detectConfigKind(GOOD_OUTSIDE)).toBe('outside');
  });

  it('an inside config parses; rules_dir is resolved against the file', () => {
    const c = loadInsideConfig(file('inside.yaml', GOOD_INSIDE));
    expect(c.name).toBe('branch-a');
    expect(c.sharedKey.equals(Buffer.alloc(32, 7))).toBe(true);
    expect(c.firewall).toEqual({ socks5: '127.0.0.1:1080', username: 'alice', password: 'secret' });
    expect(c.services.map((s) => s.name)).toEqual(['web', 'ftp']);
    expect(c.rules_dir).toBe(join(dir, 'rules'));
    expect(c.reconnect).toEqual({ min_ms: 500, max_ms: 30_000 });
    expect(detectConfigKind(GOOD_INSIDE)).toBe('inside');
  });

  it('a minimal inside config without firewall or services is a direct line', () => {
    const c = loadInsideConfig(file('min.yaml', `name: x\nkey: ${KEY}\noutside: relay.example:443\n`));
    expect(c.firewall).toBeUndefined();
    expect(c.services).toEqual([]);
  });

  it('HOST:PORT helpers handle IPv6 brackets', () => {
    expect(splitHostPort('[::1]:2121')).toEqual({ host: '::1', port: 2121 });
    expect(splitHostPort('a.b:80')).toEqual({ host: 'a.b', port: 80 });
    expect(joinHostPort('::1', 5)).toBe('[::1]:5');
    expect(joinHostPort('10.0.0.1', 5)).toBe('10.0.0.1:5');
  });
});

describe('config: bad files name the file, line:column and key', () => {
  it('an unknown nested key points at that key', () => {
    const e = refuse('inside', 'nested-unknown.yaml', GOOD_INSIDE.replace('  username: alice', '  user: alice'));
    expect(e.message).toMatch(/:6:3: firewall: unknown key 'user'/);
  });

  it('an unknown key in a list item points at that key', () => {
    const e = refuse('outside', 'item-unknown.yaml', GOOD_OUTSIDE.replace('    key_file: branch-a.key', '    key_file: branch-a.key\n    colour: red'));
    expect(e.message).toMatch(/:5:5: insides\.0: unknown key 'colour'/);
  });

  it('an unknown top-level key points at that key', () => {
    const e = refuse('outside', 'top-unknown.yaml', GOOD_OUTSIDE + 'bogus: 1\n');
    expect(e.message).toMatch(/:12:1: .*unknown key 'bogus'/);
  });

  it('a bad HOST:PORT points at the value', () => {
    const e = refuse('outside', 'listen.yaml', GOOD_OUTSIDE.replace('listen: 127.0.0.1:7000', 'listen: 127.0.0.1'));
    expect(e.message).toMatch(/:1:9: listen: expected HOST:PORT/);
  });

  it('a negative connection timeout is refused at its line; 0 turns it off', () => {
    const e = refuse('outside', 'idle.yaml', GOOD_OUTSIDE + 'limits:\n  idle_timeout_ms: -1\n');
    expect(e.message).toMatch(/:13:20: limits\.idle_timeout_ms: .*>=0/);
    expect(loadOutsideConfig(file('idle0.yaml', GOOD_OUTSIDE + 'limits:\n  half_close_timeout_ms: 0\n')).limits.half_close_timeout_ms).toBe(0);
  });

  it('an out-of-range port inside a service points at it', () => {
    const e = refuse('inside', 'port.yaml', GOOD_INSIDE.replace('listen: 127.0.0.1:18080', 'listen: 127.0.0.1:99999'));
    expect(e.message).toMatch(/:10:13: services\.0\.listen: port must be 0-65535/);
  });

  it('a missing required key is named', () => {
    const e = refuse('inside', 'missing.yaml', GOOD_INSIDE.replace('outside: 127.0.0.1:7000\n', ''));
    expect(e.message).toMatch(/:1:1: outside: /);
  });

  it('both key and key_file is refused, naming key', () => {
    const e = refuse('inside', 'both.yaml', GOOD_INSIDE.replace('key_file: branch-a.key', `key_file: branch-a.key\nkey: ${KEY}`));
    expect(e.message).toMatch(/:3:6: key: give exactly one of key or key_file/);
    const o = refuse('outside', 'both-out.yaml', GOOD_OUTSIDE.replace('    key_file: branch-a.key', `    key_file: branch-a.key\n    key: ${KEY}`));
    expect(o.message).toMatch(/:3:5: insides\.0: give exactly one of key or key_file/);
  });

  it('neither key nor key_file is refused too', () => {
    const e = refuse('inside', 'neither.yaml', GOOD_INSIDE.replace('key_file: branch-a.key\n', ''));
    expect(e.message).toMatch(/key: give exactly one of key or key_file/);
  });

  it('YAML syntax errors give the line and column', () => {
    const dup = refuse('inside', 'dup.yaml', GOOD_INSIDE.replace('log_level: info', 'log_level: info\nname: again'));
    expect(dup.message).toMatch(/:18:1: Map keys must be unique/);
    const indent = refuse('inside', 'indent.yaml', 'name: a\n  key: x\n');
    expect(indent.message).toMatch(/:1:7: /);
  });

  it('a key that is not base64 of at least 16 bytes, or a missing key_file, is refused', () => {
    expect(refuse('inside', 'short.yaml', GOOD_INSIDE.replace('key_file: branch-a.key', 'key: c2hvcnQ=')).message).toMatch(/:\d+:6: key: the key must be at least 16 bytes/);
    // At its line, with how to make one.
    const line = GOOD_INSIDE.split('\n').findIndex((l) => l.startsWith('key_file:')) + 1;
    expect(refuse('inside', 'nokey.yaml', GOOD_INSIDE.replace('key_file: branch-a.key', 'key_file: nope.key')).message)
      .toMatch(new RegExp(`nokey\\.yaml:${line}:11: key_file: cannot read .*nope\\.key: ENOENT \\(make one with \`portside keygen --out nope\\.key\``));
  });

  it('duplicate names are refused', () => {
    expect(refuse('outside', 'dupname.yaml', GOOD_OUTSIDE.replace('name: branch-b', 'name: branch-a')).message).toMatch(/:\d+:\d+: insides\.1\.name: inside relay 'branch-a' listed twice/);
    expect(refuse('inside', 'dupsvc.yaml', GOOD_INSIDE.replace('name: ftp', 'name: web')).message).toMatch(/:\d+:\d+: services\.1\.name: service 'web' defined twice/);
  });

  it('a bad log level and a bad CIDR are refused naming the key', () => {
    expect(refuse('inside', 'level.yaml', GOOD_INSIDE.replace('log_level: info', 'log_level: loud')).message).toMatch(/:17:12: log_level: /);
    expect(refuse('outside', 'cidr.yaml', GOOD_OUTSIDE.replace('"::1"', '"not a net"')).message).toMatch(/:10:25: allow\.from\.1: expected an address or network in CIDR form/);
  });
});

describe('client config: local listeners', () => {
  const base = [
    'outside: 127.0.0.1:7100',
    `outside_fingerprint: "sha256:${'ab'.repeat(32)}"`,
    'username: alice',
    'password: x',
  ];
  const load = (name: string, lines: string[]) => loadClientConfig(file(name, [...base, ...lines].join('\n')));
  const refused = (name: string, lines: string[]): ConfigError => {
    try {
      load(name, lines);
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).code).toBe(ErrorCode.CONFIG);
      return e as ConfigError;
    }
    throw new Error(`${name} was accepted`);
  };

  it('refuses a SOCKS5 port or a forward on an address other than loopback, at its line, unless allow_remote', () => {
    expect(refused('socks-any.yaml', ['socks5: 0.0.0.0:1080']).message).toMatch(/:5:9: socks5: 0\.0\.0\.0:1080 is not a loopback address: whoever reaches it connects as this agent's user\. Listen on 127\.0\.0\.1, or set allow_remote: true/);
    expect(refused('fwd-any.yaml', ['forwards:', '  - {listen: "127.0.0.1:2121", to: "10.0.0.1:21"}', '  - {listen: "[::]:8080", to: "10.0.0.1:80"}']).message).toMatch(/:7:14: forwards\.1\.listen: \[::\]:8080 is not a loopback address/);
    expect(refused('socks-name.yaml', ['socks5: agent.example:1080']).message).toMatch(/socks5: agent\.example:1080 is not a loopback address/);
    const c = load('remote-ok.yaml', ['socks5: 0.0.0.0:1080', 'forwards:', '  - {listen: "[::]:8080", to: "10.0.0.1:80"}', 'allow_remote: true']);
    expect(c.allow_remote).toBe(true);
  });

  it('takes loopback in every spelling: 127.0.0.0/8, [::1], localhost', () => {
    const c = load('loopback.yaml', ['socks5: 127.0.0.2:1080', 'forwards:', '  - {listen: "[::1]:2121", to: "10.0.0.1:21"}', '  - {listen: "localhost:8080", to: "10.0.0.1:80"}']);
    expect(c.allow_remote).toBe(false);
    expect(c.forwards.map((f) => f.listen)).toEqual(['[::1]:2121', 'localhost:8080']);
  });
});

/** GOOD_INSIDE with `outsides:` in place of `outside:` (claim 14). */
const SEVERAL = (outsides: string) => GOOD_INSIDE.replace('outside: 127.0.0.1:7000\n', `outsides:\n${outsides}`);
const OTHER_KEY = Buffer.alloc(16, 9).toString('base64');

describe('inside config: several outside relays (outsides)', () => {
  it('one session per outside relay, each with its key, services and reach', () => {
    const text = SEVERAL([
      '  - address: relay-a.example:7000',
      '  - address: relay-b.example:7000',
      `    key: ${OTHER_KEY}`,
      '    services: [ftp]',
      '    reach: ["10.1.0.0/16"]',
      '',
    ].join('\n')) + 'reach: ["10.0.0.0/8"]\n';
    expect(detectConfigKind(text)).toBe('inside');
    const c = loadInsideConfig(file('several.yaml', text));
    const [a, b] = insideRelayConfigs(c);
    expect(c.outsides).toHaveLength(2);
    expect(a!.outside).toBe('relay-a.example:7000');
    expect(a!.sharedKey.equals(Buffer.alloc(32, 7))).toBe(true); // the top-level key_file
    expect(a!.services.map((s) => s.name)).toEqual(['web', 'ftp']);
    expect(a!.reach).toEqual(['10.0.0.0/8']);
    expect(b!.outside).toBe('relay-b.example:7000');
    expect(b!.sharedKey.equals(Buffer.alloc(16, 9))).toBe(true);
    expect(b!.services.map((s) => s.name)).toEqual(['ftp']);
    expect(b!.reach).toEqual(['10.1.0.0/16']);
    // The firewall, limits and the rest are the same for both.
    expect(b!.firewall).toEqual(a!.firewall);
    // One outside relay: the same, a list of one.
    const one = loadInsideConfig(file('one.yaml', GOOD_INSIDE));
    expect(insideRelayConfigs(one).map((x) => [x.outside, x.services.length])).toEqual([['127.0.0.1:7000', 2]]);
  });

  it('every outside relay may have its own key and no top-level key is needed', () => {
    const text = SEVERAL(`  - address: a.example:1\n    key: ${OTHER_KEY}\n  - address: b.example:1\n    key_file: branch-a.key\n`).replace('key_file: branch-a.key\noutsides', 'outsides');
    const [a, b] = insideRelayConfigs(loadInsideConfig(file('own-keys.yaml', text)));
    expect(a!.sharedKey.equals(Buffer.alloc(16, 9))).toBe(true);
    expect(b!.sharedKey.equals(Buffer.alloc(32, 7))).toBe(true);
  });

  it('refuses, at its line: both outside and outsides, neither, an unknown service name, an address twice, an outside with no key', () => {
    const both = refuse('inside', 'both-outsides.yaml', GOOD_INSIDE.replace('outside: 127.0.0.1:7000\n', 'outside: 127.0.0.1:7000\noutsides:\n  - address: a.example:1\n'));
    expect(both.message).toMatch(/:3:10: outside: give exactly one of outside \(one outside relay\) or outsides \(several\)/);
    const neither = refuse('inside', 'no-outside.yaml', GOOD_INSIDE.replace('outside: 127.0.0.1:7000\n', ''));
    expect(neither.message).toMatch(/outside: give exactly one of outside/);
    const unknown = refuse('inside', 'unknown-svc.yaml', SEVERAL('  - address: a.example:1\n    services: [web, gopher]\n'));
    expect(unknown.message).toMatch(/:5:21: outsides\.0\.services\.1: no service named 'gopher' in services/);
    const twice = refuse('inside', 'twice.yaml', SEVERAL('  - address: a.example:1\n  - address: a.example:1\n'));
    expect(twice.message).toMatch(/:5:14: outsides\.1\.address: outside relay a\.example:1 listed twice/);
    const keyless = refuse('inside', 'keyless.yaml', SEVERAL(`  - address: a.example:1\n    key: ${OTHER_KEY}\n  - address: b.example:1\n`).replace('key_file: branch-a.key\n', ''));
    expect(keyless.message).toMatch(/key: give exactly one of key or key_file/);
  });
});
