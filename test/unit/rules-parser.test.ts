import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RulesSyntaxError } from '../../src/errors.js';
import { parseRules, ruleSetFromInit, serializeForOutside } from '../../src/rules/index.js';
import { loadRules } from '../../src/rules/load.js';

const RULES_DIR = join(import.meta.dirname, '../../rules');

describe('shipped rules files', () => {
  it('ftp.rules parses to PORT, EPRT, PASV, EPSV', () => {
    const r = loadRules(RULES_DIR, 'ftp');
    expect(r.name).toBe('ftp');
    expect(r.service).toEqual({ host: null, port: 21 });
    expect(r.policy).toEqual({ maxLine: 1024, onLongLine: 'reset', acceptTimeoutMs: 30_000, maxPending: 4, bounceCheck: true, inspectData: false });
    expect(r.esp).toEqual({ check: true });
    expect(r.notices.map((n) => [n.name, n.direction, n.action, n.format])).toEqual([
      ['PORT', 'c2s', 'connect-back', 'ftp-hostport'],
      ['EPRT', 'c2s', 'connect-back', 'eprt'],
      ['PASV', 's2c', 'listen-outside', 'pasv-227'],
      ['EPSV', 's2c', 'listen-outside', 'epsv-229'],
    ]);
    expect(r.notices[0]!.start.toString()).toBe('PORT ');
    expect(r.notices[0]!.nocase).toBe(true);
    expect(r.notices[0]!.refuse.reply).toBe('501 portside: PORT refused.\r\n');
    expect(r.notices[2]!.refuse.replace).toBe('425 portside: passive address refused.\r\n');
  });

  it('irc-dcc.rules parses to DCC-SEND and DCC-CHAT', () => {
    const r = loadRules(RULES_DIR, 'irc-dcc');
    expect(r.name).toBe('irc-dcc');
    expect(r.service.port).toBe(6667);
    expect(r.policy.onLongLine).toBe('pass');
    expect(r.policy.acceptTimeoutMs).toBe(120_000);
    expect(r.notices.map((n) => [n.name, n.direction, n.action, n.format])).toEqual([
      ['DCC-SEND', 'c2s', 'connect-back', 'ip-uint32-port'],
      ['DCC-CHAT', 'c2s', 'connect-back', 'ip-uint32-port'],
    ]);
    expect(r.notices[0]!.start.toString()).toBe('PRIVMSG ');
  });

  it('init data round-trips through JSON and compiles to the same rules', () => {
    for (const name of ['ftp', 'irc-dcc']) {
      const r = loadRules(RULES_DIR, name);
      const wire = JSON.stringify(serializeForOutside(r));
      const back = ruleSetFromInit(JSON.parse(wire));
      expect(back.spec).toEqual(r.spec);
      expect(back.file).toBe('<init data>');
      expect(back.notices.map((n) => n.regex.source)).toEqual(r.notices.map((n) => n.regex.source));
    }
  });

  it('init data that is malformed is refused with PS_ERR_PROTOCOL', () => {
    const good = serializeForOutside(loadRules(RULES_DIR, 'ftp'));
    const cases: unknown[] = [
      null,
      { ...good, version: 2 },
      { ...good, policy: { ...good.policy, maxLine: 1 } },
      { ...good, notices: [] },
      { ...good, notices: [{ ...good.notices[0], format: 'nope' }] },
      { ...good, notices: [{ ...good.notices[0], action: 'listen-outside' }] },
      { ...good, notices: [{ ...good.notices[0], match: { kind: 'regex', source: '(', flags: '' } }] },
      { ...good, notices: [{ ...good.notices[0], match: { kind: 'regex', source: '^PORT', flags: '' } }] },
    ];
    for (const c of cases) {
      expect(() => ruleSetFromInit(c), JSON.stringify(c)?.slice(0, 80)).toThrow(expect.objectContaining({ code: 'PS_ERR_PROTOCOL' }));
    }
  });

  it('a minimal file uses the documented defaults and the file name', () => {
    const r = parseRules(
      'initial service-address = 10.0.0.5:2121\nISP part {\n notice X { direction client-to-server; match "X {addr}"; format host-port; action connect-back }\n}\n',
      '/etc/portside/rules/thing.rules',
    );
    expect(r.name).toBe('thing');
    expect(r.service).toEqual({ host: '10.0.0.5', port: 2121 });
    expect(r.policy).toEqual({ maxLine: 2048, onLongLine: 'reset', acceptTimeoutMs: 30_000, maxPending: 4, bounceCheck: true, inspectData: false });
    expect(r.esp).toEqual({ check: false });
    expect(r.notices[0]!.bounceCheck).toBe(true);
  });

  it('a notice bounce-check overrides the policy default', () => {
    const r = parseRules(
      'initial service-address = [::1]:21\npolicy { bounce-check off }\nISP part {\n' +
        ' notice A { direction client-to-server; match "A {addr}"; format host-port; action connect-back }\n' +
        ' notice B { direction client-to-server; match "B {addr}"; format host-port; action connect-back; bounce-check on }\n}\n',
      'x.rules',
    );
    expect(r.service).toEqual({ host: '::1', port: 21 });
    expect(r.notices.map((n) => n.bounceCheck)).toEqual([false, true]);
  });
});

/** Build a file whose notice block contains `body` (one setting per line). */
const NOTICE_HEAD = 'initial service-address = 21\nISP part {\n  notice PORT {\n';
const withNotice = (body: string) => `${NOTICE_HEAD}${body}\n  }\n}\n`;
const BASE_NOTICE = '    direction client-to-server\n    match "PORT {addr}"\n    format ftp-hostport\n    action connect-back';

describe('syntax errors carry file, line, column and PS_ERR_RULES_SYNTAX', () => {
  const cases: Array<[string, string, number, number, RegExp]> = [
    ['unknown top-level keyword', 'initial service-address = 21\nfoo bar\n', 2, 1, /unknown keyword 'foo'/],
    ['unknown policy keyword', 'initial service-address = 21\npolicy {\n  max-lines 5\n}\n', 3, 3, /unknown keyword 'max-lines' in policy/],
    ['unknown notice keyword', withNotice(BASE_NOTICE + '\n    colour red'), 8, 5, /unknown keyword 'colour' in notice PORT/],
    ['unknown ISP part keyword', 'initial service-address = 21\nISP part {\n  rule X {}\n}\n', 3, 3, /unknown keyword 'rule' in ISP part/],
    ['unknown ESP part keyword', 'initial service-address = 21\nESP part {\n  connect on\n}\n', 3, 3, /unknown keyword 'connect' in ESP part/],
    ['missing opening brace', 'initial service-address = 21\npolicy\n  max-line 100\n', 2, 7, /missing '\{' after policy/],
    ['missing closing brace', 'initial service-address = 21\npolicy {\n  max-line 100\n', 2, 8, /missing '\}'.*policy block opened here/],
    ['missing closing brace of a notice', `${NOTICE_HEAD}${BASE_NOTICE}\n`, 3, 15, /missing '\}'.*notice PORT block/],
    ['bad regex', withNotice(BASE_NOTICE.replace('"PORT {addr}"', '/^PORT (?<addr>[0-9,]+))$/')), 5, 11, /bad regular expression/],
    ['regex without addr group', withNotice(BASE_NOTICE.replace('"PORT {addr}"', '/^PORT (.*)$/')), 5, 11, /no \(\?<addr>/],
    ['bad regex flag', withNotice(BASE_NOTICE.replace('"PORT {addr}"', '/^PORT (?<addr>.*)$/ig')), 5, 32, /unsupported regular expression flag 'g'/],
    ['unterminated regex', withNotice(BASE_NOTICE.replace('"PORT {addr}"', '/^PORT (?<addr>.*)$')), 5, 11, /unterminated regular expression/],
    ['template without addr', withNotice(BASE_NOTICE.replace('"PORT {addr}"', '"PORT {*}"')), 5, 12, /no \{addr\}/],
    ['unknown placeholder', withNotice(BASE_NOTICE.replace('"PORT {addr}"', '"PORT {host} {addr}"')), 5, 17, /unknown placeholder \{host\}/],
    ['unterminated string', withNotice(BASE_NOTICE.replace('"PORT {addr}"', '"PORT {addr}')), 5, 11, /unterminated string/],
    ['bad escape', withNotice(BASE_NOTICE.replace('"PORT {addr}"', '"PORT\\q {addr}"')), 5, 16, /unknown escape '\\q'/],
    ['unknown format', withNotice(BASE_NOTICE.replace('ftp-hostport', 'ftp-host')), 6, 12, /unknown format 'ftp-host' \(known: ftp-hostport, pasv-227/],
    ['unknown action', withNotice(BASE_NOTICE.replace('connect-back', 'connect')), 7, 12, /unknown action 'connect'/],
    ['action not fitting direction', withNotice(BASE_NOTICE.replace('connect-back', 'listen-outside')), 7, 12, /action listen-outside does not fit direction client-to-server/],
    ['unknown direction', withNotice(BASE_NOTICE.replace('client-to-server', 'upstream')), 4, 15, /unknown direction 'upstream'/],
    ['bad number', 'initial service-address = 21\npolicy {\n  max-line 12x\n}\n', 3, 12, /bad number '12x' for max-line/],
    ['number out of range', 'initial service-address = 21\npolicy {\n  max-pending 0\n}\n', 3, 15, /max-pending 0 is outside 1-1024/],
    ['bad duration', 'initial service-address = 21\npolicy {\n  accept-timeout 30\n}\n', 3, 18, /bad duration '30'/],
    ['bad on/off', 'initial service-address = 21\npolicy {\n  bounce-check yes\n}\n', 3, 16, /expected on or off after bounce-check/],
    ['bad on-long-line', 'initial service-address = 21\npolicy {\n  on-long-line drop\n}\n', 3, 16, /expected reset or pass/],
    ['bad service port', 'initial service-address = 99999\n', 1, 27, /service port 99999 is outside/],
    ['bad service number', 'initial service-address = ftp\n', 1, 27, /bad number 'ftp'/],
    ['bad service host', 'initial service-address = example.com:21\n', 1, 27, /'example.com' is not an IP address/],
    ['duplicate notice', withNotice(BASE_NOTICE) .replace('  }\n}\n', `  }\n  notice port {\n${BASE_NOTICE}\n  }\n}\n`), 9, 10, /duplicate notice 'port' \(first defined at line 3\)/],
    ['duplicate setting in notice', withNotice(BASE_NOTICE + '\n    format eprt'), 8, 5, /duplicate format in notice PORT \(first given at line 6\)/],
    ['duplicate policy setting', 'initial service-address = 21\npolicy {\n  max-line 100\n  max-line 200\n}\n', 4, 3, /duplicate max-line/],
    ['duplicate block', 'initial service-address = 21\npolicy {\n}\npolicy {\n}\n', 4, 1, /duplicate policy block/],
    ['duplicate service address', 'initial service-address = 21\ninitial service-address = 22\n', 2, 1, /duplicate initial service-address/],
    ['missing service address', 'ISP part {\n  notice X { direction client-to-server; match "X {addr}"; format eprt; action connect-back }\n}\n', 1, 1, /missing required 'initial service-address'/],
    ['missing ISP part', 'initial service-address = 21\n', 1, 1, /missing required 'ISP part'/],
    ['empty ISP part', 'initial service-address = 21\nISP part {\n}\n', 2, 1, /declares no notice/],
    ['notice missing format', withNotice(BASE_NOTICE.replace('    format ftp-hostport\n', '')), 3, 3, /notice PORT has no 'format'/],
    ['notice missing match', withNotice(BASE_NOTICE.replace('    match "PORT {addr}"\n', '')), 3, 3, /notice PORT has no 'match'/],
    ['junk after a setting', withNotice(BASE_NOTICE.replace('format ftp-hostport', 'format ftp-hostport extra')), 6, 25, /unexpected 'extra': expected end of line/],
    ['nocase on a regex', withNotice(BASE_NOTICE.replace('"PORT {addr}"', 'nocase /^PORT (?<addr>.*)$/')), 5, 18, /nocase applies to templates/],
    ['ISP without part', 'initial service-address = 21\nISP {\n}\n', 2, 5, /expected 'part' after ISP/],
  ];
  for (const [what, text, line, column, msg] of cases) {
    it(what, () => {
      let err: unknown;
      try {
        parseRules(text, 'bad.rules');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RulesSyntaxError);
      const e = err as RulesSyntaxError;
      expect(e.code).toBe('PS_ERR_RULES_SYNTAX');
      expect(e.message).toMatch(msg);
      expect({ file: e.file, line: e.line, column: e.column }).toEqual({ file: 'bad.rules', line, column });
      expect(e.message.startsWith(`bad.rules:${line}:${column}: `)).toBe(true);
    });
  }
});
