// `portside run`'s option and config handling (src/run.ts): what it puts in the program's
// environment for the hook. The hook itself is exercised in test/e2e/hook.e2e.test.ts.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { PortsideError } from '../../src/errors.js';
import {
  buildRunEnv, hookPath, parseRouteOption, readClientConfig, remoteName, resolveConfigRoute, resolveSocks, routesToEnv, setWarn,
} from '../../src/run.js';

const dir = mkdtempSync(join(tmpdir(), 'portside-run-'));
const fakeHook = join(dir, 'portside-hook.so');
writeFileSync(fakeHook, '');
const file = (name: string, text: string) => { const p = join(dir, name); writeFileSync(p, text); return p; };

function codeOf(f: () => unknown): string | undefined {
  try { f(); } catch (e) { return (e as PortsideError).code; }
  return undefined;
}

describe('portside run: routes', () => {
  it('parses --route MATCH=ACTION in the hook syntax, firewall meaning the agent', () => {
    expect(parseRouteOption('10.201.2.0/24=portside')).toEqual({ match: '10.201.2.0/24', action: 'portside' });
    expect(parseRouteOption('10.0.0.0/8:21=portside')).toEqual({ match: '10.0.0.0/8:21', action: 'portside' });
    expect(parseRouteOption('[2001:db8::/32]:20-21=direct')).toEqual({ match: '[2001:db8::/32]:20-21', action: 'direct' });
    expect(parseRouteOption('2001:db8::/32=portside').match).toBe('2001:db8::/32');
    expect(parseRouteOption('*:443=firewall')).toEqual({ match: '*:443', action: 'portside' });
  });

  it('refuses bad routes with PS_ERR_CONFIG and a message naming the route', () => {
    expect(() => parseRouteOption('10.0.0.0/8')).toThrow(/route '10.0.0.0\/8': expected MATCH=ACTION/);
    expect(() => parseRouteOption('10.0.0.0/33=portside')).toThrow(/bad prefix length '\/33'/);
    expect(() => parseRouteOption('10.0.0.1:99999=portside')).toThrow(/bad port '99999'/);
    expect(() => parseRouteOption('10.0.0.1=tunnel')).toThrow(/action must be portside, firewall or direct/);
    expect(() => parseRouteOption('ftp.intra=portside')).toThrow(/'ftp.intra' is not an IP address/);
    expect(codeOf(() => parseRouteOption('[::1/200]=portside'))).toBe('PS_ERR_CONFIG');
  });

  it('resolves host names in direct config routes to every address, keeping the port', async () => {
    const fake = async (h: string) => (h === 'ftp.intra' ? ['10.201.2.21', 'fd00::21'] : []);
    expect(await resolveConfigRoute({ match: 'ftp.intra:21', via: 'direct' }, fake)).toEqual([
      { match: '10.201.2.21:21', action: 'direct' },
      { match: '[fd00::21]:21', action: 'direct' },
    ]);
    // The agent takes firewall routes on through the firewall; the hook only gets them there.
    expect(await resolveConfigRoute({ match: '10.0.0.0/8', via: 'firewall' }, fake)).toEqual([{ match: '10.0.0.0/8', action: 'portside' }]);
    expect(await resolveConfigRoute({ match: '[fd00::]/8:21', via: 'direct' }, fake)).toEqual([{ match: '[fd00::]/8:21', action: 'direct' }]);
    await expect(resolveConfigRoute({ match: 'ftp.intra/24', via: 'portside' }, fake)).rejects.toThrow(/host name takes no prefix/);
    await expect(
      resolveConfigRoute({ match: 'nowhere', via: 'direct' }, async () => { throw new Error('ENOTFOUND'); }),
    ).rejects.toThrow(/cannot resolve 'nowhere'/);
  });

  it('ignores host name patterns with a warning: connect() sees addresses only', async () => {
    const warnings: string[] = [];
    setWarn((m) => warnings.push(m));
    try {
      expect(await resolveConfigRoute({ match: '*.intra:21', via: 'direct' }, async () => ['10.0.0.1'])).toEqual([]);
    } finally {
      setWarn((m) => process.stderr.write(`portside: warning: ${m}\n`));
    }
    expect(warnings).toEqual(["route '*.intra:21' is a host name pattern: the hook sees addresses only, so portside run ignores it"]);
  });

  it('joins routes for PORTSIDE_ROUTES in order', () => {
    expect(routesToEnv([{ match: '10.0.0.0/8', action: 'portside' }, { match: '*', action: 'direct' }])).toBe('10.0.0.0/8=portside;*=direct');
  });

  it('makes the agent address numeric', async () => {
    expect(await resolveSocks('127.0.0.1:1080')).toBe('127.0.0.1:1080');
    expect(await resolveSocks('[::1]:1080')).toBe('[::1]:1080');
    expect(await resolveSocks('localhost:1080')).toMatch(/^(127\.0\.0\.1|\[::1\]):1080$/);
    await expect(resolveSocks('127.0.0.1')).rejects.toThrow(/expected HOST:PORT/);
    await expect(resolveSocks('127.0.0.1:0')).rejects.toThrow(/expected HOST:PORT/);
  });
});

describe('portside run: client config', () => {
  it('reads socks5: and routes: and ignores the rest', () => {
    const f = file('client.yaml', [
      'outside: 127.0.0.1:7000',
      'socks5: 127.0.0.1:11080',
      'routes:',
      '  - { match: "10.201.2.0/24", via: portside }',
      '  - match: "10.0.0.0/8:21"',
      '    via: firewall',
      '  - { match: "*", via: direct }',
    ].join('\n'));
    expect(readClientConfig(f)).toEqual({
      socks: '127.0.0.1:11080',
      routes: [
        { match: '10.201.2.0/24', via: 'portside' },
        { match: '10.0.0.0/8:21', via: 'firewall' },
        { match: '*', via: 'direct' },
      ],
    });
    expect(readClientConfig(file('c2.yaml', 'socks5: { listen: "127.0.0.1:2080" }\n')).socks).toBe('127.0.0.1:2080');
  });

  it('refuses malformed routes and YAML', () => {
    expect(() => readClientConfig(file('bad1.yaml', 'routes: 10.0.0.0/8\n'))).toThrow(/routes: expected a list/);
    expect(() => readClientConfig(file('bad2.yaml', 'routes:\n  - { match: 10.0.0.0/8 }\n'))).toThrow(/routes\[0\]/);
    expect(codeOf(() => readClientConfig(file('bad3.yaml', 'a: [\n')))).toBe('PS_ERR_CONFIG');
  });
});

describe('portside run: environment', () => {
  const base = { PATH: process.env.PATH, PORTSIDE_HOOK_PATH: fakeHook };

  it('preloads the hook and passes agent and routes, --route before config routes, then the agent default', async () => {
    const cfg = file('run.yaml', 'socks5: 127.0.0.1:11080\nroutes:\n  - { match: "10.0.0.0/8", via: portside }\n  - { match: "192.168.0.0/16", via: direct }\n');
    const env = await buildRunEnv({ config: cfg, route: ['10.1.0.0/16=direct'], debug: true }, base);
    expect(env.LD_PRELOAD).toBe(fakeHook);
    expect(env.PORTSIDE_SOCKS).toBe('127.0.0.1:11080');
    // As in the agent, no match means portside: the agent decides with the same routes.
    expect(env.PORTSIDE_ROUTES).toBe('10.1.0.0/16=direct;10.0.0.0/8=portside;192.168.0.0/16=direct;*=portside');
    expect(env.PORTSIDE_HOOK_DEBUG).toBe('1');
    expect(env.PATH).toBe(process.env.PATH);
  });

  it('--socks wins over the config; an existing LD_PRELOAD is kept after the hook', async () => {
    const cfg = file('run2.yaml', 'socks5: 127.0.0.1:11080\n');
    const env = await buildRunEnv({ config: cfg, socks: '127.0.0.1:3333' }, { ...base, LD_PRELOAD: '/lib/other.so' });
    expect(env.PORTSIDE_SOCKS).toBe('127.0.0.1:3333');
    expect(env.LD_PRELOAD).toBe(`${fakeHook} /lib/other.so`);
    expect(env.PORTSIDE_HOOK_DEBUG).toBeUndefined();
  });

  it('host names and name patterns routed to the agent become PORTSIDE_NAMES (resolved by the relays); --name adds more', async () => {
    const cfg = file('names.yaml', 'socks5: 127.0.0.1:11080\nroutes:\n  - { match: "*.intra", via: portside }\n  - { match: "ftp.example.com:21", via: firewall }\n  - { match: "10.0.0.0/8", via: portside }\n');
    const env = await buildRunEnv({ config: cfg, name: ['Wiki.Corp'] }, base);
    expect(env.PORTSIDE_NAMES).toBe('wiki.corp;*.intra;ftp.example.com');
    expect(env.PORTSIDE_ROUTES).toBe('10.0.0.0/8=portside;*=portside');
    expect((await buildRunEnv({ route: ['10.0.0.0/8=portside'] }, base)).PORTSIDE_NAMES).toBeUndefined();
    await expect(buildRunEnv({ name: ['bad name'] }, base)).rejects.toMatchObject({ code: 'PS_ERR_CONFIG', message: "--name 'bad name': expected a host name or pattern such as *.intra" });
    expect(remoteName({ match: '*.intra', via: 'direct' })).toBeNull(); // direct names stay the program's own
    expect(remoteName({ match: '10.0.0.1', via: 'portside' })).toBeNull();
    expect(() => remoteName({ match: 'ftp.intra/24', via: 'portside' })).toThrow(/host name takes no prefix/);
  });

  it('--route alone leaves unmatched destinations direct', async () => {
    const env = await buildRunEnv({ route: ['10.0.0.0/8=portside'] }, base);
    expect(env.PORTSIDE_ROUTES).toBe('10.0.0.0/8=portside');
  });

  it('needs the agent address: a client config without socks5: is an error unless --socks is given', async () => {
    const cfg = file('nosocks.yaml', 'routes:\n  - { match: "10.0.0.0/8", via: portside }\n');
    await expect(buildRunEnv({ config: cfg }, base)).rejects.toThrow(/no socks5: address; portside run needs the agent's local SOCKS5 server/);
    expect((await buildRunEnv({ config: cfg, socks: '127.0.0.1:2000' }, base)).PORTSIDE_SOCKS).toBe('127.0.0.1:2000');
  });

  it('with no routes at all sends everything to the agent on the default address', async () => {
    const env = await buildRunEnv({}, base);
    expect(env.PORTSIDE_ROUTES).toBe('*=portside');
    expect(env.PORTSIDE_SOCKS).toBe('127.0.0.1:1080');
  });

  it('says clearly when the hook was not built', async () => {
    const missing = join(dir, 'no-such-hook.so');
    await expect(buildRunEnv({}, { PORTSIDE_HOOK_PATH: missing })).rejects.toThrow(/socket hook is not built .*npm run build:hook/);
    await expect(buildRunEnv({}, { PORTSIDE_HOOK_PATH: missing })).rejects.toMatchObject({ code: 'PS_ERR_HOOK' });
  });

  it('finds the hook inside the package by default', () => {
    expect(hookPath({})).toBe(fileURLToPath(new URL('../../hook/portside-hook.so', import.meta.url)));
  });
});
