// The hook's route matcher (hook/match.c), driven through hook/test-match: the same C code
// the LD_PRELOAD library uses, first match wins, IPv4/IPv6 CIDR, ports and port ranges.
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const hookDir = fileURLToPath(new URL('../../hook/', import.meta.url));
const driver = `${hookDir}test-match`;

beforeAll(() => {
  execFileSync('make', ['-s', '--no-print-directory', '-C', hookDir, 'test-match'], { stdio: 'inherit' });
});

/** Run the driver; returns the route count and each destination's action. */
function decide(spec: string, dests: string[]): { routes: number; actions: Record<string, string> } {
  const r = spawnSync(driver, [spec, ...dests], { encoding: 'utf8' });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  const lines = r.stdout.trim().split('\n');
  const routes = Number(/^routes (\d+)$/.exec(lines[0])![1]);
  const actions: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const [d, a] = l.split(' ');
    actions[d] = a;
  }
  return { routes, actions };
}

function parseError(spec: string): string {
  const r = spawnSync(driver, [spec], { encoding: 'utf8' });
  expect(r.status).toBe(2);
  return r.stdout.trim();
}

describe('hook route matching (hook/match.c)', () => {
  const spec = '10.201.2.0/24=portside;10.0.0.0/8:21=portside;192.168.0.0/16=direct;*=direct';

  it('applies the example route list from the brief, first match wins', () => {
    const { routes, actions } = decide(spec, [
      '10.201.2.0:80', '10.201.2.255:443', '10.201.3.1:80', '10.9.9.9:21', '10.9.9.9:22',
      '192.168.1.1:21', '8.8.8.8:53',
    ]);
    expect(routes).toBe(4);
    expect(actions).toEqual({
      '10.201.2.0:80': 'portside',
      '10.201.2.255:443': 'portside',
      '10.201.3.1:80': 'direct',
      '10.9.9.9:21': 'portside',
      '10.9.9.9:22': 'direct',
      '192.168.1.1:21': 'direct',
      '8.8.8.8:53': 'direct',
    });
  });

  it('first match wins even when a later route is more specific', () => {
    const { actions } = decide('10.0.0.0/8=direct;10.1.2.3=portside', ['10.1.2.3:80']);
    expect(actions['10.1.2.3:80']).toBe('direct');
    const swapped = decide('10.1.2.3=portside;10.0.0.0/8=direct', ['10.1.2.3:80', '10.1.2.4:80']);
    expect(swapped.actions).toEqual({ '10.1.2.3:80': 'portside', '10.1.2.4:80': 'direct' });
  });

  it('defaults to direct when nothing matches (and with no routes at all)', () => {
    expect(decide('10.0.0.0/8=portside', ['11.0.0.1:80']).actions['11.0.0.1:80']).toBe('direct');
    const none = decide('', ['10.0.0.1:80', '[::1]:80']);
    expect(none.routes).toBe(0);
    expect(none.actions).toEqual({ '10.0.0.1:80': 'direct', '[::1]:80': 'direct' });
  });

  it('matches non-octet prefix lengths exactly at the boundary', () => {
    const { actions } = decide('172.16.0.0/12=portside;100.64.0.0/10:1000-2000=portside', [
      '172.16.0.1:1', '172.31.255.255:1', '172.32.0.0:1', '172.15.255.255:1',
      '100.127.0.1:1000', '100.127.0.1:2000', '100.127.0.1:2001', '100.128.0.1:1500',
    ]);
    expect(actions).toEqual({
      '172.16.0.1:1': 'portside',
      '172.31.255.255:1': 'portside',
      '172.32.0.0:1': 'direct',
      '172.15.255.255:1': 'direct',
      '100.127.0.1:1000': 'portside',
      '100.127.0.1:2000': 'portside',
      '100.127.0.1:2001': 'direct',
      '100.128.0.1:1500': 'direct',
    });
  });

  it('matches IPv6 networks, bracketed with ports and bare without', () => {
    const { routes, actions } = decide(
      '[2001:db8:1::/48]:21=portside;2001:db8::/32=direct;[fd00::]/8:443=portside;::1=portside;*:22=portside',
      [
        '[2001:db8:1:ffff::5]:21', '[2001:db8:1::5]:80', '[2001:db8:2::5]:21',
        '[fd12:3456::1]:443', '[fd12:3456::1]:80', '[fe80::1]:443',
        '[::1]:8080', '[::2]:8080', '[2001:db8:1::9]:22', '10.0.0.1:22', '10.0.0.1:23',
      ],
    );
    expect(routes).toBe(5);
    expect(actions).toEqual({
      '[2001:db8:1:ffff::5]:21': 'portside',
      '[2001:db8:1::5]:80': 'direct',
      '[2001:db8:2::5]:21': 'direct',
      '[fd12:3456::1]:443': 'portside',
      '[fd12:3456::1]:80': 'direct',
      '[fe80::1]:443': 'direct',
      '[::1]:8080': 'portside',
      '[::2]:8080': 'direct',
      '[2001:db8:1::9]:22': 'direct', // the /32 direct route comes first
      '10.0.0.1:22': 'portside',
      '10.0.0.1:23': 'direct',
    });
  });

  it('treats an IPv4-mapped IPv6 destination as IPv4, and a mapped route as an IPv4 route', () => {
    const { actions } = decide('10.201.2.0/24=portside;[::ffff:192.0.2.0/120]:21=portside', [
      '[::ffff:10.201.2.7]:80', '[::ffff:10.201.3.7]:80', '192.0.2.44:21', '[::ffff:192.0.2.44]:21', '192.0.2.44:20',
    ]);
    expect(actions).toEqual({
      '[::ffff:10.201.2.7]:80': 'portside',
      '[::ffff:10.201.3.7]:80': 'direct',
      '192.0.2.44:21': 'portside',
      '[::ffff:192.0.2.44]:21': 'portside',
      '192.0.2.44:20': 'direct',
    });
  });

  it('never lets an IPv4 route match an IPv6 destination or the reverse', () => {
    const { actions } = decide('0.0.0.0/0=portside', ['[2001:db8::1]:80', '1.2.3.4:80']);
    expect(actions).toEqual({ '[2001:db8::1]:80': 'direct', '1.2.3.4:80': 'portside' });
    const v6 = decide('::/0=portside', ['[2001:db8::1]:80', '1.2.3.4:80']);
    expect(v6.actions).toEqual({ '[2001:db8::1]:80': 'portside', '1.2.3.4:80': 'direct' });
  });

  it('accepts spaces, commas and newlines between entries, and firewall meaning the agent', () => {
    const { routes, actions } = decide(' 10.0.0.1 = direct , 10.0.0.0/8=firewall\n*=direct ', ['10.0.0.1:80', '10.0.0.2:80', '11.0.0.1:80']);
    expect(routes).toBe(3);
    expect(actions).toEqual({ '10.0.0.1:80': 'direct', '10.0.0.2:80': 'portside', '11.0.0.1:80': 'direct' });
  });

  it('refuses bad entries with a message naming the entry', () => {
    expect(parseError('10.0.0.0/33=portside')).toBe("error: bad route address, prefix or port: '10.0.0.0/33=portside'");
    expect(parseError('10.0.0.0/8:70000=portside')).toMatch(/bad route address, prefix or port/);
    expect(parseError('10.0.0.0/8:30-20=portside')).toMatch(/bad route/);
    expect(parseError('[2001:db8::/129]=portside')).toMatch(/bad route/);
    expect(parseError('ftp.example.com=portside')).toMatch(/bad route address/);
    expect(parseError('10.0.0.1=socks')).toBe("error: route action must be portside or direct: '10.0.0.1=socks'");
    expect(parseError('10.0.0.1')).toBe("error: route needs MATCH=ACTION: '10.0.0.1'");
    expect(parseError('*/8=direct')).toMatch(/bad route/);
  });
});

describe('hook: names the relays resolve (hook/names.c)', () => {
  const names = (spec: string, list: string[]) => spawnSync(driver, ['--names', spec, ...list], { encoding: 'utf8' });

  it('matches host names against the patterns, case-insensitively, never a numeric address', () => {
    const r = names('*.intra; ftp.example.com', ['ftp.intra', 'FTP.INTRA.', 'a.b.intra', 'intra', 'ftp.example.com', 'x.ftp.example.com', 'ftp.example.com.evil', '10.1.2.3', '::1']);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const got = Object.fromEntries(r.stdout.trim().split('\n').filter((l) => / (remote|local)$/.test(l)).map((l) => l.split(' ')));
    expect(got).toEqual({
      'ftp.intra': 'remote', 'FTP.INTRA.': 'remote', 'a.b.intra': 'remote', intra: 'local',
      'ftp.example.com': 'remote', 'x.ftp.example.com': 'local', 'ftp.example.com.evil': 'local', '10.1.2.3': 'local', '::1': 'local',
    });
    expect(r.stdout).toMatch(/^names 2$/m);
  });

  it('gives each table index a stand-in in 224.0.0.0/8 that maps back to it, and no other address', () => {
    const r = names('x', []);
    expect(r.stdout).toContain('addr 1 224.0.0.1 1');
    expect(r.stdout).toContain('addr 256 224.0.1.0 256');
    expect(r.stdout).toContain('addr 16777215 224.255.255.255 16777215');
    expect(r.stdout).toContain('addr other 0');
  });

  it('refuses a pattern that is not a host name', () => {
    const r = names('*.intra;bad pattern!', []);
    expect(r.status).toBe(2);
    expect(r.stdout.trim()).toBe("error: bad name pattern: 'bad pattern!'");
  });
});

