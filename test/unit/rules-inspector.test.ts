import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkBounce, Inspector, parseRules, type InspectItem, type Notice } from '../../src/rules/index.js';
import { loadRules } from '../../src/rules/load.js';
import type { Direction } from '../../src/rules/types.js';
import { rng } from '../support/rng.js';

const RULES_DIR = join(import.meta.dirname, '../../rules');
const ftp = loadRules(RULES_DIR, 'ftp');
const irc = loadRules(RULES_DIR, 'irc-dcc');

const B = (s: string) => Buffer.from(s, 'latin1');

function only<K extends InspectItem['kind']>(items: InspectItem[], kind: K): Extract<InspectItem, { kind: K }> {
  const found = items.filter((i) => i.kind === kind);
  expect(found).toHaveLength(1);
  return found[0] as Extract<InspectItem, { kind: K }>;
}

function noticeOf(rules = ftp, dir: Direction, line: string): Notice {
  const items = new Inspector(rules).push(dir, B(line));
  expect(items).toHaveLength(1);
  const it = only(items, 'notice');
  expect(it.line.toString('latin1')).toBe(line);
  return it.notice;
}

/** Deterministic PRNG (mulberry32) so random chunkings are reproducible. */

/** Items in a comparable form: adjacent data merged, notices by their fields and line. */
function normalize(items: InspectItem[]): unknown[] {
  const out: unknown[] = [];
  for (const it of items) {
    if (it.kind === 'data') {
      const last = out[out.length - 1] as { data?: string } | undefined;
      if (last && last.data !== undefined) last.data += it.buf.toString('latin1');
      else out.push({ data: it.buf.toString('latin1') });
    } else if (it.kind === 'notice') {
      const n = it.notice;
      out.push({ notice: n.rule, dir: n.direction, host: n.host, port: n.port, family: n.family, line: it.line.toString('latin1') });
    } else {
      out.push({ error: it.code, fatal: it.fatal, rule: it.rule, line: it.line?.toString('latin1') });
    }
  }
  return out;
}

/** The stream again: data as is, notices rewritten to their own address, refused lines as they were. */
function reconstruct(items: InspectItem[]): string {
  return items
    .map((it) => {
      if (it.kind === 'data') return it.buf.toString('latin1');
      if (it.kind === 'notice') return it.notice.rewrite(it.notice.host || '127.0.0.1', it.notice.port).toString('latin1');
      return it.line?.toString('latin1') ?? '';
    })
    .join('');
}

function feed(rules: typeof ftp, dir: Direction, stream: Buffer, cuts: number[]): { items: InspectItem[]; maxHeld: number } {
  const ins = new Inspector(rules);
  const items: InspectItem[] = [];
  let prev = 0;
  let maxHeld = 0;
  for (const c of [...cuts, stream.length]) {
    items.push(...ins.push(dir, stream.subarray(prev, c)));
    maxHeld = Math.max(maxHeld, ins.bufferedBytes(dir));
    prev = c;
  }
  items.push(...ins.flush(dir));
  return { items, maxHeld };
}

describe('notices are found with the right address', () => {
  it('PORT', () => {
    const n = noticeOf(ftp, 'c2s', 'PORT 127,0,0,1,195,80\r\n');
    expect(n).toMatchObject({ rule: 'PORT', direction: 'c2s', action: 'connect-back', host: '127.0.0.1', port: 50000, family: 4, bounceCheck: true });
    expect(n.refusal.reply?.toString()).toBe('501 portside: PORT refused.\r\n');
  });
  it('PORT in lower case (FTP commands are case-insensitive)', () => {
    expect(noticeOf(ftp, 'c2s', 'port 10,1,2,3,4,1\r\n')).toMatchObject({ host: '10.1.2.3', port: 1025 });
  });
  it('EPRT IPv4', () => {
    expect(noticeOf(ftp, 'c2s', 'EPRT |1|132.235.1.2|6275|\r\n')).toMatchObject({ rule: 'EPRT', host: '132.235.1.2', port: 6275, family: 4 });
  });
  it('EPRT IPv6 with another delimiter', () => {
    expect(noticeOf(ftp, 'c2s', 'EPRT !2!1080::8:800:200C:417A!5282!\r\n')).toMatchObject({ host: '1080::8:800:200C:417A', port: 5282, family: 6 });
  });
  it('227', () => {
    const n = noticeOf(ftp, 's2c', '227 Entering Passive Mode (192,168,1,20,19,137).\r\n');
    expect(n).toMatchObject({ rule: 'PASV', direction: 's2c', action: 'listen-outside', host: '192.168.1.20', port: 5001, family: 4 });
    expect(n.refusal.replace?.toString()).toBe('425 portside: passive address refused.\r\n');
  });
  it('229', () => {
    expect(noticeOf(ftp, 's2c', '229 Entering Extended Passive Mode (|||6446|)\r\n')).toMatchObject({ rule: 'EPSV', host: '', port: 6446, family: 0 });
  });
  it('DCC SEND, plain and quoted file name, with and without size', () => {
    expect(noticeOf(irc, 'c2s', 'PRIVMSG bob :\x01DCC SEND report.pdf 2130706433 40000 1048576\x01\r\n')).toMatchObject({
      rule: 'DCC-SEND', direction: 'c2s', action: 'connect-back', host: '127.0.0.1', port: 40000, family: 4,
    });
    expect(noticeOf(irc, 'c2s', 'PRIVMSG bob :\x01DCC SEND "my file 2 3.txt" 3232235777 5000\x01\n')).toMatchObject({ host: '192.168.1.1', port: 5000 });
  });
  it('DCC CHAT', () => {
    expect(noticeOf(irc, 'c2s', 'PRIVMSG bob :\x01DCC CHAT chat 167772161 6000\x01\r\n')).toMatchObject({ rule: 'DCC-CHAT', host: '10.0.0.1', port: 6000 });
  });
  it('notices only count in their direction', () => {
    const ins = new Inspector(ftp);
    expect(ins.push('s2c', B('PORT 127,0,0,1,195,80\r\n'))).toEqual([{ kind: 'data', buf: B('PORT 127,0,0,1,195,80\r\n') }]);
    expect(ins.push('c2s', B('227 Entering Passive Mode (1,2,3,4,5,6).\r\n'))).toEqual([{ kind: 'data', buf: B('227 Entering Passive Mode (1,2,3,4,5,6).\r\n') }]);
  });
  it('the directions option leaves a direction uninspected', () => {
    const ins = new Inspector(ftp, { directions: ['c2s'] });
    expect(ins.push('s2c', B('227 Entering Passive Mode (1,2,3,4,5,6).\r\n'))[0]!.kind).toBe('data');
    expect(ins.push('c2s', B('PORT 1,2,3,4,5,6\r\n'))[0]!.kind).toBe('notice');
  });
  it('DCC port 0 (reverse DCC) and other PRIVMSGs pass on unchanged', () => {
    const text = 'PRIVMSG bob :\x01DCC SEND f 2130706433 0 10 77\x01\r\nPRIVMSG #chan :hello PORT 1,2,3,4,5,6\r\n';
    const items = new Inspector(irc).push('c2s', B(text));
    expect(items).toEqual([{ kind: 'data', buf: B(text) }]);
  });
});

describe('rewrite produces exactly the right syntax', () => {
  it('PORT', () => {
    expect(noticeOf(ftp, 'c2s', 'PORT 10,0,0,9,4,1\r\n').rewrite('192.168.7.1', 50001).toString()).toBe('PORT 192,168,7,1,195,81\r\n');
  });
  it('PORT keeps a bare LF ending and the command spelling', () => {
    expect(noticeOf(ftp, 'c2s', 'port 10,0,0,9,4,1\n').rewrite('::ffff:10.1.1.1', 258).toString()).toBe('port 10,1,1,1,1,2\n');
  });
  it('PORT cannot carry IPv6: rewrite throws PS_ERR_RULE_REFUSED', () => {
    const n = noticeOf(ftp, 'c2s', 'PORT 10,0,0,9,4,1\r\n');
    expect(() => n.rewrite('::1', 2000)).toThrow(expect.objectContaining({ code: 'PS_ERR_RULE_REFUSED' }));
    expect(() => n.rewrite('10.0.0.1', 70000)).toThrow(expect.objectContaining({ code: 'PS_ERR_RULE_REFUSED' }));
  });
  it('EPRT takes the family of the new address and keeps the delimiter', () => {
    const n = noticeOf(ftp, 'c2s', 'EPRT |1|132.235.1.2|6275|\r\n');
    expect(n.rewrite('10.9.8.7', 1234).toString()).toBe('EPRT |1|10.9.8.7|1234|\r\n');
    expect(n.rewrite('fe80::1', 1234).toString()).toBe('EPRT |2|fe80::1|1234|\r\n');
    expect(noticeOf(ftp, 'c2s', 'EPRT !2!::1!5282!\r\n').rewrite('127.0.0.1', 80).toString()).toBe('EPRT !1!127.0.0.1!80!\r\n');
  });
  it('227 keeps the surrounding text', () => {
    const n = noticeOf(ftp, 's2c', '227 Entering Passive Mode (192,168,1,20,19,137).\r\n');
    expect(n.rewrite('203.0.113.5', 40001).toString()).toBe('227 Entering Passive Mode (203,0,113,5,156,65).\r\n');
  });
  it('229 writes only the port', () => {
    const n = noticeOf(ftp, 's2c', '229 Entering Extended Passive Mode (|||6446|)\r\n');
    expect(n.rewrite('203.0.113.5', 40002).toString()).toBe('229 Entering Extended Passive Mode (|||40002|)\r\n');
  });
  it('DCC SEND', () => {
    const n = noticeOf(irc, 'c2s', 'PRIVMSG bob :\x01DCC SEND report.pdf 2130706433 40000 1048576\x01\r\n');
    expect(n.rewrite('10.0.0.1', 50000).toString('latin1')).toBe('PRIVMSG bob :\x01DCC SEND report.pdf 167772161 50000 1048576\x01\r\n');
    expect(() => n.rewrite('::1', 50000)).toThrow(expect.objectContaining({ code: 'PS_ERR_RULE_REFUSED' }));
  });
});

describe('lying or garbage notices give an error item, not a crash', () => {
  const cases: Array<[typeof ftp, Direction, string, RegExp]> = [
    [ftp, 'c2s', 'PORT 999,1,1,1,1,1\r\n', /999 is not a number 0-255/],
    [ftp, 'c2s', 'PORT 1,2,3,4,300,1\r\n', /300 is not a number 0-255/],
    [ftp, 'c2s', 'PORT 1,2,3,4,0,0\r\n', /port 0/],
    [ftp, 'c2s', 'PORT 1,2,3,4,5\r\n', /expected 6/],
    [ftp, 'c2s', 'PORT hello\r\n', /expected 6/],
    [ftp, 'c2s', 'EPRT |1|1.2.3.4|70000|\r\n', /port 70000 is outside 1-65535/],
    [ftp, 'c2s', 'EPRT |1|::1|2000|\r\n', /not an IPv4 address/],
    [ftp, 'c2s', 'EPRT |3|1.2.3.4|2000|\r\n', /network protocol "3"/],
    [ftp, 's2c', '227 Entering Passive Mode (1,2,3,4,256,1).\r\n', /256/],
    [ftp, 's2c', '229 Entering Extended Passive Mode (|||99999|)\r\n', /99999/],
    [irc, 'c2s', 'PRIVMSG bob :\x01DCC SEND f 99999999999 5000 1\x01\r\n', /not an unsigned 32-bit/],
    [irc, 'c2s', 'PRIVMSG bob :\x01DCC CHAT chat 2130706433 70000\x01\r\n', /port 70000/],
  ];
  for (const [rules, dir, line, msg] of cases) {
    it(JSON.stringify(line), () => {
      const items = new Inspector(rules).push(dir, B(line));
      expect(items).toHaveLength(1);
      const e = only(items, 'error');
      expect(e.code).toBe('PS_ERR_RULE_REFUSED');
      expect(e.fatal).toBe(false);
      expect(e.message).toMatch(msg);
      expect(e.line?.toString('latin1')).toBe(line);
    });
  }
  it('the refusal carries the rule reply (c2s) or replacement (s2c)', () => {
    const c = only(new Inspector(ftp).push('c2s', B('PORT 999,1,1,1,1,1\r\n')), 'error');
    expect(c.reply?.toString()).toBe('501 portside: PORT refused.\r\n');
    const s = only(new Inspector(ftp).push('s2c', B('227 x (1,2,3,4,256,1)\r\n')), 'error');
    expect(s.replace?.toString()).toBe('425 portside: passive address refused.\r\n');
  });
  it('the connection keeps working after a refusal', () => {
    const ins = new Inspector(ftp);
    const items = ins.push('c2s', B('PORT 999,1,1,1,1,1\r\nNOOP\r\nPORT 127,0,0,1,4,0\r\n'));
    expect(items.map((i) => i.kind)).toEqual(['error', 'data', 'notice']);
    expect((items[1] as { buf: Buffer }).buf.toString()).toBe('NOOP\r\n');
  });
});

describe('bounce check', () => {
  it('accepts the peer itself, refuses any other host, folds IPv4-mapped IPv6', () => {
    const n = noticeOf(ftp, 'c2s', 'PORT 127,0,0,1,195,80\r\n');
    expect(checkBounce(n, '127.0.0.1')).toBeNull();
    expect(checkBounce(n, '::ffff:127.0.0.1')).toBeNull();
    const e = checkBounce(n, '127.0.0.2');
    expect(e?.code).toBe('PS_ERR_RULE_REFUSED');
    expect(e?.message).toMatch(/announces 127\.0\.0\.1, not the client's own address 127\.0\.0\.2/);
    const v6 = noticeOf(ftp, 'c2s', 'EPRT |2|0:0::1|5282|\r\n');
    expect(checkBounce(v6, '::1')).toBeNull();
    expect(checkBounce(v6, '127.0.0.1')).not.toBeNull();
  });
  it('does not apply to a hostless 229 or when the rule turns it off', () => {
    expect(checkBounce(noticeOf(ftp, 's2c', '229 x (|||6446|)\r\n'), '10.0.0.1')).toBeNull();
    const lax = parseRules(
      'initial service-address = 21\nISP part {\n notice P { direction client-to-server; match "PORT {addr}"; format ftp-hostport; action connect-back; bounce-check off }\n}\n',
      'lax.rules',
    );
    expect(checkBounce(noticeOf(lax, 'c2s', 'PORT 10,0,0,9,1,1\r\n'), '127.0.0.1')).toBeNull();
  });
});

describe('streaming', () => {
  it('non-notice bytes are passed through promptly, without waiting for a line end', () => {
    const ins = new Inspector(ftp);
    expect(ins.push('c2s', B('RETR some/long/file'))).toEqual([{ kind: 'data', buf: B('RETR some/long/file') }]);
    expect(ins.bufferedBytes('c2s')).toBe(0);
    expect(ins.push('c2s', B('.bin\r\nPO'))).toEqual([{ kind: 'data', buf: B('.bin\r\n') }]);
    expect(ins.bufferedBytes('c2s')).toBe(2); // "PO" could still become PORT
    expect(normalize(ins.push('c2s', B('ST')))).toEqual([{ data: 'POST' }]); // cannot any more
    expect(ins.bufferedBytes('c2s')).toBe(0);
    expect(ins.push('c2s', B(' x\r\n'))).toEqual([{ kind: 'data', buf: B(' x\r\n') }]);
  });
  it('a held partial candidate line is released at end of stream', () => {
    const ins = new Inspector(ftp);
    expect(ins.push('c2s', B('PORT 1,2,3'))).toEqual([]);
    expect(ins.flush('c2s')).toEqual([{ kind: 'data', buf: B('PORT 1,2,3') }]);
  });
  it('bulk data without line ends costs one item per chunk and holds nothing', () => {
    const big = Buffer.alloc(4 << 20, 0x41);
    const ins = new Inspector(ftp);
    for (let i = 0; i < 4; i++) {
      const items = ins.push('s2c', big);
      expect(items).toHaveLength(1);
      expect((items[0] as { buf: Buffer }).buf).toBe(big); // passed through without a copy
      expect(ins.bufferedBytes('s2c')).toBe(0);
    }
  });
  it('many non-notice lines in one chunk come out as one data item', () => {
    const text = Array.from({ length: 10_000 }, (_, i) => `:srv 372 me :line ${i}\r\n`).join('');
    const items = new Inspector(irc).push('s2c', B(text));
    expect(items).toEqual([{ kind: 'data', buf: B(text) }]);
    const c2s = Array.from({ length: 10_000 }, (_, i) => `PRIVMSG #c :hello ${i}\r\n`).join('');
    const items2 = new Inspector(irc).push('c2s', B(c2s));
    expect(items2.map((i) => i.kind).every((k) => k === 'data')).toBe(true);
    expect(reconstruct(items2)).toBe(c2s);
  });
});

/** A control-connection transcript with every kind of line, including near misses. */
const FTP_C2S = [
  'USER anonymous\r\n', 'PASS x@y\r\n', 'TYPE I\r\n', 'PORT 127,0,0,1,195,80\r\n', 'RETR a.bin\r\n',
  'POR\r\n', 'PORTABLE 1\r\n', 'port 127,0,0,1,4,1\r\n', 'EPRT |1|127.0.0.1|6275|\r\n', 'EPRT |2|::1|5282|\r\n',
  'EPRT |1|127.0.0.1|99999|\r\n', 'PORT 999,1,1,1,1,1\r\n', '\r\n', '\n', 'STOR \xff\xfe binary name\r\n', 'E',
  'PORT 10,0,0,1,0,21\n', 'x'.repeat(3000) + '\r\n', 'NOOP\r\n', 'QUIT', // no final line end
].join('');
const FTP_S2C = [
  '220 (vsFTPd 3.0.3)\r\n', '230 Login successful.\r\n', '227 Entering Passive Mode (127,0,0,1,156,64).\r\n',
  '150 Here comes the directory listing.\r\n', '229 Entering Extended Passive Mode (|||40001|)\r\n', '226 Directory send OK.\r\n',
  '22', '7\r\n', '227 Entering Passive Mode (garbage).\r\n', '229-\r\n', '211-Features:\r\n EPRT\r\n EPSV\r\n211 End\r\n',
].join('');
const IRC_C2S = [
  'NICK alice\r\n', 'USER a 0 * :Alice\r\n', 'PRIVMSG bob :hi there\r\n',
  'PRIVMSG bob :\x01DCC SEND report.pdf 2130706433 40000 1048576\x01\r\n', 'PRIVMSG bob :\x01DCC CHAT chat 2130706433 40001\x01\r\n',
  'PING :x\r\n', 'PRIVMSG bob :\x01DCC SEND f 99999999999 5000 1\x01\r\n', 'PRIVMSG #c :' + 'y'.repeat(5000) + '\r\n', 'QUIT :bye\r\n',
].join('');

describe('random chunk boundaries give the same items as one piece', () => {
  const streams: Array<[string, typeof ftp, Direction, string]> = [
    ['ftp c2s', ftp, 'c2s', FTP_C2S.replace('x'.repeat(3000) + '\r\n', '')], // the long line would reset (tested below)
    ['ftp s2c', ftp, 's2c', FTP_S2C],
    ['irc c2s', irc, 'c2s', IRC_C2S],
  ];
  for (const [what, rules, dir, text] of streams) {
    it(what, () => {
      const stream = B(text);
      const ref = feed(rules, dir, stream, []);
      const refNorm = normalize(ref.items);
      expect(reconstruct(ref.items)).toBe(text);
      expect(ref.items.some((i) => i.kind === 'notice')).toBe(true);
      const rand = rng(0xc0ffee ^ text.length);
      for (let round = 0; round < 300; round++) {
        const cuts = new Set<number>();
        const k = 1 + Math.floor(rand() * 40);
        for (let j = 0; j < k; j++) cuts.add(1 + Math.floor(rand() * (stream.length - 1)));
        const got = feed(rules, dir, stream, [...cuts].sort((a, b) => a - b));
        expect(normalize(got.items)).toEqual(refNorm);
        expect(got.maxHeld).toBeLessThanOrEqual(rules.policy.maxLine);
      }
      const bytewise = feed(rules, dir, stream, Array.from({ length: stream.length - 1 }, (_, i) => i + 1));
      expect(normalize(bytewise.items)).toEqual(refNorm);
      expect(reconstruct(bytewise.items)).toBe(text);
    });
  }
});

describe('over-long lines, with bounded memory', () => {
  const mk = (policy: string) =>
    parseRules(
      `initial service-address = 21\npolicy { max-line 64; on-long-line ${policy} }\nISP part {\n` +
        ' notice PORT { direction client-to-server; match "PORT {addr}"; format ftp-hostport; action connect-back }\n}\n',
      `${policy}.rules`,
    );
  const long = 'PORT ' + '1,'.repeat(100) + '1\r\n';
  const text = 'NOOP\r\n' + long + 'PORT 127,0,0,1,4,1\r\nNOOP\r\n';

  it('reset: a fatal error, nothing of the line passed, later input dropped', () => {
    for (const cuts of [[], Array.from({ length: text.length - 1 }, (_, i) => i + 1), [3, 10, 40, 70, 100]]) {
      const { items, maxHeld } = feed(mk('reset'), 'c2s', B(text), cuts);
      expect(maxHeld).toBeLessThanOrEqual(64);
      const kinds = normalize(items);
      expect(kinds).toEqual([{ data: 'NOOP\r\n' }, { error: 'PS_ERR_LINE_TOO_LONG', fatal: true, rule: undefined, line: undefined }]);
    }
  });
  it('pass: the long line goes on uninspected, the next line is inspected again', () => {
    const rules = mk('pass');
    const ref = normalize(feed(rules, 'c2s', B(text), []).items);
    expect(ref).toEqual([
      { data: 'NOOP\r\n' },
      { error: 'PS_ERR_LINE_TOO_LONG', fatal: false, rule: undefined, line: undefined },
      { data: long },
      { notice: 'PORT', dir: 'c2s', host: '127.0.0.1', port: 1025, family: 4, line: 'PORT 127,0,0,1,4,1\r\n' },
      { data: 'NOOP\r\n' },
    ]);
    const rand = rng(7);
    for (let round = 0; round < 200; round++) {
      const cuts = new Set<number>();
      for (let j = 0; j < 1 + rand() * 30; j++) cuts.add(1 + Math.floor(rand() * (text.length - 1)));
      const got = feed(rules, 'c2s', B(text), [...cuts].sort((a, b) => a - b));
      expect(normalize(got.items)).toEqual(ref);
      expect(got.maxHeld).toBeLessThanOrEqual(64);
      expect(reconstruct(got.items)).toBe(text);
    }
    const bytewise = feed(rules, 'c2s', B(text), Array.from({ length: text.length - 1 }, (_, i) => i + 1));
    expect(normalize(bytewise.items)).toEqual(ref);
    expect(bytewise.maxHeld).toBeLessThanOrEqual(64);
  });
  it('a 1 MiB line that could be a notice never holds more than max-line', () => {
    for (const policy of ['reset', 'pass']) {
      const ins = new Inspector(mk(policy));
      const chunk = B('1,'.repeat(8));
      ins.push('c2s', B('PORT '));
      let passed = 0;
      for (let i = 0; i < 65536; i++) {
        for (const it of ins.push('c2s', chunk)) if (it.kind === 'data') passed += it.buf.length;
        expect(ins.bufferedBytes('c2s')).toBeLessThanOrEqual(64);
      }
      if (policy === 'pass') expect(passed).toBe(5 + 16 * 65536);
      else expect(passed).toBe(0);
    }
  });
  it('the shipped ftp.rules resets on a long PORT but passes a long non-notice line', () => {
    const items = new Inspector(ftp).push('c2s', B('STOR ' + 'z'.repeat(5000) + '\r\nPORT ' + '9'.repeat(2000) + '\r\n'));
    expect(items.map((i) => i.kind)).toEqual(['data', 'error']);
    expect((items[1] as { fatal: boolean }).fatal).toBe(true);
  });
});
