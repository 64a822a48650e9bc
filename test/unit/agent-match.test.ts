import { describe, expect, it } from 'vitest';
import { isLocalAddress, matchAny, matchDest, parseDestPattern, routeFor, type Route } from '../../src/agent/match.js';

describe('destination patterns', () => {
  it('matches IPv4 networks, with and without ports', () => {
    const p = parseDestPattern('10.1.0.0/16');
    expect(matchDest(p, '10.1.2.3', 80)).toBe(true);
    expect(matchDest(p, '10.2.0.1', 80)).toBe(false);
    expect(matchDest(p, 'ftp.intra', 21)).toBe(false);
    const q = parseDestPattern('10.1.0.0/16:21');
    expect(matchDest(q, '10.1.2.3', 21)).toBe(true);
    expect(matchDest(q, '10.1.2.3', 22)).toBe(false);
    expect(matchDest(q, '10.1.2.3')).toBe(false);
    const r = parseDestPattern('10.1.2.3:8000-8100');
    expect(matchDest(r, '10.1.2.3', 8050)).toBe(true);
    expect(matchDest(r, '10.1.2.3', 8101)).toBe(false);
    expect(matchDest(r, '10.1.2.4', 8050)).toBe(false);
    expect(matchDest(parseDestPattern('0.0.0.0/0'), '192.0.2.1', 1)).toBe(true);
  });

  it('matches IPv6 networks and IPv4-mapped addresses', () => {
    expect(matchDest(parseDestPattern('fd00::/8'), 'fd12::1', 80)).toBe(true);
    expect(matchDest(parseDestPattern('fd00::/8'), 'fe80::1', 80)).toBe(false);
    expect(matchDest(parseDestPattern('[fd00::]/8:443'), 'fd00::5', 443)).toBe(true);
    expect(matchDest(parseDestPattern('[fd00::]/8:443'), 'fd00::5', 80)).toBe(false);
    expect(matchDest(parseDestPattern('::1'), '::1', 5)).toBe(true);
    expect(matchDest(parseDestPattern('10.0.0.0/8'), '::ffff:10.9.9.9', 5)).toBe(true);
    expect(matchDest(parseDestPattern('10.0.0.0/8'), 'fd00::1', 5)).toBe(false);
  });

  it('matches host name globs case-insensitively, never IP literals (except *)', () => {
    const p = parseDestPattern('*.Intra');
    expect(matchDest(p, 'ftp.intra', 21)).toBe(true);
    expect(matchDest(p, 'FTP.INTRA', 21)).toBe(true);
    expect(matchDest(p, 'intra', 21)).toBe(false);
    expect(matchDest(p, 'ftp.intra.evil.com', 21)).toBe(false);
    expect(matchDest(parseDestPattern('ftp.intra:21'), 'ftp.intra', 20)).toBe(false);
    expect(matchDest(parseDestPattern('*'), '10.0.0.1', 1)).toBe(true);
    expect(matchDest(parseDestPattern('*:443'), 'example.com', 443)).toBe(true);
    expect(matchDest(parseDestPattern('*:443'), 'example.com', 80)).toBe(false);
  });

  it('refuses bad patterns with a message naming them', () => {
    for (const bad of ['', '10.0.0.0/33', '10.0.0.1:0', '10.0.0.1:70000', 'a b', 'host/8', '[fd00::', '10.0.0.1:9-3', '::/129']) {
      expect(() => parseDestPattern(bad), bad).toThrow();
    }
  });

  it('routes: first match wins, default portside (claim 12)', () => {
    const routes: Route[] = [
      { match: parseDestPattern('10.9.0.0/16'), via: 'direct' },
      { match: parseDestPattern('*.partner.example:443'), via: 'firewall' },
      { match: parseDestPattern('10.0.0.0/8'), via: 'portside' },
      { match: parseDestPattern('*'), via: 'direct' },
    ];
    expect(routeFor(routes, '10.9.1.1', 80)).toBe('direct');
    expect(routeFor(routes, 'www.partner.example', 443)).toBe('firewall');
    expect(routeFor(routes, 'www.partner.example', 80)).toBe('direct');
    expect(routeFor(routes, '10.1.1.1', 21)).toBe('portside');
    expect(routeFor(routes, 'example.org', 80)).toBe('direct');
    expect(routeFor([], 'anything', 1)).toBe('portside');
    expect(matchAny(routes.map((r) => r.match), '192.0.2.1', 1)).toBe(true);
  });

  it('local addresses: loopback and the machine own interfaces only', () => {
    expect(isLocalAddress('127.0.0.1', [])).toBe(true);
    expect(isLocalAddress('127.8.9.10', [])).toBe(true);
    expect(isLocalAddress('::1', [])).toBe(true);
    expect(isLocalAddress('10.201.1.10', ['10.201.1.10'])).toBe(true);
    expect(isLocalAddress('10.201.1.11', ['10.201.1.10'])).toBe(false);
    expect(isLocalAddress('ftp.intra', ['10.201.1.10'])).toBe(false);
  });
});
