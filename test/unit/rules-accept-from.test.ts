// The notice setting `accept-from server|any`: who may open a connect-back data connection.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RulesSyntaxError } from '../../src/errors.js';
import { Inspector, parseRules, ruleSetFromInit, serializeForOutside } from '../../src/rules/index.js';
import { loadRules } from '../../src/rules/load.js';

const RULES_DIR = join(import.meta.dirname, '../../rules');

const file = (noticeBody: string, direction = 'client-to-server', action = 'connect-back') => `
initial service-address = 6667
ISP part {
  notice OFFER {
    direction ${direction}
    match "OFFER {addr}"
    format host-port
    action ${action}
${noticeBody}
  }
}
`;

function syntaxError(text: string): RulesSyntaxError {
  try {
    parseRules(text, 't.rules');
  } catch (err) {
    expect(err).toBeInstanceOf(RulesSyntaxError);
    return err as RulesSyntaxError;
  }
  throw new Error('expected a syntax error');
}

describe('accept-from', () => {
  it('defaults to server; FTP keeps it, IRC DCC says any', () => {
    expect(parseRules(file(''), 't.rules').notices[0]!.acceptFrom).toBe('server');
    expect(parseRules(file('    accept-from server'), 't.rules').notices[0]!.acceptFrom).toBe('server');
    expect(parseRules(file('    accept-from any'), 't.rules').notices[0]!.acceptFrom).toBe('any');
    expect(loadRules(RULES_DIR, 'ftp').notices.every((n) => n.acceptFrom === 'server')).toBe(true);
    expect(loadRules(RULES_DIR, 'irc-dcc').notices.map((n) => [n.name, n.acceptFrom])).toEqual([
      ['DCC-SEND', 'any'],
      ['DCC-CHAT', 'any'],
    ]);
  });

  it('reaches the notice the inspector hands the relay', () => {
    const ins = new Inspector(parseRules(file('    accept-from any'), 't.rules'));
    const items = ins.push('c2s', Buffer.from('OFFER 10.0.0.5 5000\r\n'));
    expect(items).toHaveLength(1);
    const it0 = items[0]!;
    expect(it0.kind).toBe('notice');
    if (it0.kind === 'notice') expect(it0.notice).toMatchObject({ host: '10.0.0.5', port: 5000, acceptFrom: 'any' });
  });

  it('rejects bad values, duplicates and listen-outside notices with positions', () => {
    let e = syntaxError(file('    accept-from everyone'));
    expect(e.message).toContain("expected server or any after accept-from, found 'everyone'");
    expect([e.line, e.column]).toEqual([9, 17]);
    e = syntaxError(file('    accept-from any\n    accept-from server'));
    expect(e.message).toContain('duplicate accept-from in notice OFFER (first given at line 9)');
    expect(e.line).toBe(10);
    e = syntaxError(file('    accept-from any', 'server-to-client', 'listen-outside'));
    expect(e.message).toContain('accept-from applies to connect-back notices only');
    expect([e.line, e.column]).toEqual([9, 17]);
    e = syntaxError(file('    accept-from'));
    expect(e.message).toContain('server or any after accept-from');
  });

  it('travels in init data; absent means server; invalid values are PS_ERR_PROTOCOL', () => {
    const r = loadRules(RULES_DIR, 'irc-dcc');
    const wire = JSON.parse(JSON.stringify(serializeForOutside(r)));
    expect(ruleSetFromInit(wire).notices.map((n) => n.acceptFrom)).toEqual(['any', 'any']);
    const old = JSON.parse(JSON.stringify(wire));
    for (const n of old.notices) delete n.acceptFrom;
    expect(ruleSetFromInit(old).notices.map((n) => n.acceptFrom)).toEqual(['server', 'server']);
    const bad = JSON.parse(JSON.stringify(wire));
    bad.notices[0].acceptFrom = 'everyone';
    expect(() => ruleSetFromInit(bad)).toThrow(expect.objectContaining({ code: 'PS_ERR_PROTOCOL' }));
    const ftp = JSON.parse(JSON.stringify(serializeForOutside(loadRules(RULES_DIR, 'ftp'))));
    ftp.notices[2].acceptFrom = 'any'; // PASV: listen-outside
    expect(() => ruleSetFromInit(ftp)).toThrow(expect.objectContaining({ code: 'PS_ERR_PROTOCOL' }));
  });
});
