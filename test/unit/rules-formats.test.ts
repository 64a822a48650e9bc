import { describe, expect, it } from 'vitest';
import { parseAddress, renderAddress } from '../../src/rules/formats.js';
import { canonicalIp, ipFamily, ipv4ToUint32, parseIPv6, uint32ToIpv4 } from '../../src/rules/ip.js';
import { loadRules } from '../../src/rules/load.js';
import { regexStart } from '../../src/rules/compile.js';

describe('IP literals', () => {
  it('parses and canonicalises IPv4 and IPv6', () => {
    expect(canonicalIp('10.0.0.1')).toBe('10.0.0.1');
    expect(canonicalIp('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(canonicalIp('::FFFF:a00:1')).toBe('10.0.0.1');
    expect(canonicalIp('::1')).toBe('0000:0000:0000:0000:0000:0000:0000:0001');
    expect(canonicalIp('[::1]')).toBe(canonicalIp('0:0:0:0:0:0:0:1'));
    expect(parseIPv6('1080::8:800:200C:417A')).toEqual([0x1080, 0, 0, 0, 8, 0x800, 0x200c, 0x417a]);
    expect(parseIPv6('64:ff9b::192.0.2.33')).toEqual([0x64, 0xff9b, 0, 0, 0, 0, 0xc000, 0x0221]);
    expect(parseIPv6('1:2:3:4:5:6:7:8')).toHaveLength(8);
  });
  it('refuses what is not a literal', () => {
    for (const s of ['', 'localhost', '1.2.3', '1.2.3.256', '01.2.3.4', '1::2::3', '1:2:3:4:5:6:7:8:9', 'fe80::1%eth0', ':::', '1:2:3:4:5:6:7::8:9']) {
      expect(ipFamily(s), s).toBe(0);
      expect(canonicalIp(s), s).toBeNull();
    }
  });
  it('converts IPv4 to and from the DCC uint32', () => {
    expect(ipv4ToUint32('127.0.0.1')).toBe(2130706433);
    expect(ipv4ToUint32('255.255.255.255')).toBe(4294967295);
    expect(uint32ToIpv4(3232235777)).toBe('192.168.1.1');
    expect(ipv4ToUint32('::1')).toBeNull();
  });
});

describe('formats', () => {
  it('host-port takes either family and round-trips', () => {
    expect(parseAddress('host-port', '::1 5000')).toEqual({ host: '::1', port: 5000, family: 6 });
    expect(parseAddress('host-port', 'example.com 5000')).toMatch(/not an IP address/);
    expect(renderAddress('host-port', '10.0.0.1 5000', '::2', 7)).toBe('::2 7');
  });
  it('rendering keeps surrounding whitespace of the capture', () => {
    expect(renderAddress('ftp-hostport', ' 1,2,3,4,5,6 ', '10.0.0.1', 258)).toBe(' 10,0,0,1,1,2 ');
  });
  it('EPSV needs three empty fields', () => {
    expect(parseAddress('epsv-229', '|1|1.2.3.4|5|')).toMatch(/expected \|\|\|port\|/);
    expect(parseAddress('epsv-229', '!!!21!')).toEqual({ host: '', port: 21, family: 0 });
  });
});

describe('regex line starts', () => {
  it('takes the guaranteed literal prefix only', () => {
    expect(regexStart('^PORT (?<addr>.*)$')).toBe('PORT ');
    expect(regexStart('^:\\S+ PRIVMSG')).toBe(':');
    expect(regexStart('^PORTS? (?<addr>.*)')).toBe('PORT');
    expect(regexStart('^AB+C')).toBe('AB');
    expect(regexStart('^\\x01DCC')).toBe('\x01DCC');
    expect(regexStart('PORT (?<addr>.*)')).toBe('');
    expect(regexStart('^PORT|^EPRT')).toBe('');
    expect(regexStart('^(?:PORT|EPRT) (?<addr>.*)')).toBe('');
  });
});

describe('loadRules', () => {
  it('reports an unreadable file as PS_ERR_CONFIG and a bad name before touching the disk', () => {
    expect(() => loadRules('/nonexistent-dir', 'ftp')).toThrow(expect.objectContaining({ code: 'PS_ERR_CONFIG' }));
    expect(() => loadRules('/etc', '../passwd')).toThrow(expect.objectContaining({ code: 'PS_ERR_CONFIG' }));
  });
});
