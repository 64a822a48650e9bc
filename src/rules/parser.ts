/**
 * Parser for rules files (docs/rules.md). Every error is a RulesSyntaxError with the file, line
 * and column (1-based) of the offending token.
 */
import { RulesSyntaxError } from '../errors.js';
import { CompileProblem, compileNotice, compileRuleSet, DEFAULT_POLICY, LIMITS } from './compile.js';
import { FORMAT_NAMES, isFormatName, type FormatName } from './formats.js';
import { canonicalIp } from './ip.js';
import type { AcceptFrom, Action, Direction, MatchSpec, NoticeSpec, PolicySpec, RuleSet, RuleSetSpec } from './types.js';

type TokType = 'word' | 'string' | 'regex' | '{' | '}' | '=' | 'eos' | 'eof';
interface Token {
  type: TokType;
  value: string;
  line: number;
  col: number;
  /** string: source column of each decoded char (for errors inside templates). */
  cols?: number[];
  /** regex: flags after the closing slash. */
  flags?: string;
}

const describe = (t: Token): string => {
  switch (t.type) {
    case 'eos': return t.value === ';' ? "';'" : 'end of line';
    case 'eof': return 'end of file';
    case 'string': return 'a string';
    case 'regex': return 'a regular expression';
    case 'word': return `'${t.value}'`;
    default: return `'${t.type}'`;
  }
};

function tokenize(text: string, file: string): Token[] {
  const toks: Token[] = [];
  let i = 0;
  let line = 1;
  let lineStart = 0;
  const err = (at: number, msg: string): never => {
    throw new RulesSyntaxError(file, line, at - lineStart + 1, msg);
  };
  while (i < text.length) {
    const c = text[i]!;
    const col = i - lineStart + 1;
    if (c === '\n') {
      toks.push({ type: 'eos', value: '\n', line, col });
      i++;
      line++;
      lineStart = i;
    } else if (c === ' ' || c === '\t' || c === '\r') i++;
    else if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === ';') { toks.push({ type: 'eos', value: ';', line, col }); i++; }
    else if (c === '{' || c === '}' || c === '=') { toks.push({ type: c, value: c, line, col }); i++; }
    else if (c === '"') {
      // Decoded to a byte string: non-ASCII source text becomes its UTF-8 bytes, \xHH one byte.
      let value = '';
      const cols: number[] = [];
      const start = i;
      i++;
      for (;;) {
        if (i >= text.length || text[i] === '\n') err(start, 'unterminated string (missing closing ")');
        const ch = text[i]!;
        const chCol = i - lineStart + 1;
        if (ch === '"') { i++; break; }
        if (ch === '\\') {
          const n = text[i + 1];
          const simple: Record<string, string> = { n: '\n', r: '\r', t: '\t', '\\': '\\', '"': '"' };
          if (n !== undefined && n in simple) { value += simple[n]; cols.push(chCol); i += 2; continue; }
          if (n === 'x' && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 2, i + 4))) {
            value += String.fromCharCode(parseInt(text.slice(i + 2, i + 4), 16));
            cols.push(chCol);
            i += 4;
            continue;
          }
          err(i, `unknown escape '\\${n ?? ''}' in string (known: \\n \\r \\t \\\\ \\" \\xHH)`);
        }
        const cp = text.codePointAt(i)!;
        const raw = String.fromCodePoint(cp);
        const bytes = Buffer.from(raw, 'utf8').toString('latin1');
        value += bytes;
        for (let k = 0; k < bytes.length; k++) cols.push(chCol);
        i += raw.length;
      }
      toks.push({ type: 'string', value, line, col, cols });
    } else if (c === '/') {
      // Regex literal: up to the first unescaped '/' outside a [...] class, then flags.
      const start = i;
      let inClass = false;
      i++;
      for (;;) {
        if (i >= text.length || text[i] === '\n') err(start, 'unterminated regular expression (missing closing /)');
        const ch = text[i]!;
        if (ch === '\\') { i += 2; continue; }
        if (inClass) { if (ch === ']') inClass = false; }
        else if (ch === '[') inClass = true;
        else if (ch === '/') break;
        i++;
      }
      const source = text.slice(start + 1, i);
      i++;
      const fstart = i;
      while (i < text.length && /[a-zA-Z]/.test(text[i]!)) i++;
      const flags = text.slice(fstart, i);
      for (let k = 0; k < flags.length; k++) {
        if (flags[k] !== 'i' || flags.indexOf('i') !== k) err(fstart + k, `unsupported regular expression flag '${flags[k]}' (only i is allowed)`);
      }
      toks.push({ type: 'regex', value: Buffer.from(source, 'utf8').toString('latin1'), flags, line, col });
    } else {
      const start = i;
      while (i < text.length && !/[\s{}=;#"]/.test(text[i]!)) i++;
      toks.push({ type: 'word', value: text.slice(start, i), line, col });
    }
  }
  toks.push({ type: 'eof', value: '', line, col: i - lineStart + 1 });
  return toks;
}

const POLICY_KEYS = ['max-line', 'on-long-line', 'accept-timeout', 'max-pending', 'bounce-check', 'inspect-data'] as const;
const NOTICE_KEYS = ['direction', 'match', 'format', 'action', 'bounce-check', 'accept-from', 'refuse'] as const;
const TOP_KEYS = ['protocol', 'initial', 'policy', 'ISP', 'ESP'] as const;

class Parser {
  private i = 0;
  /** Per-notice bounce-check overrides, keyed by the notice keyword token (resolved against the policy at the end). */
  private readonly noticeBounce = new Map<Token, boolean>();
  constructor(private readonly toks: Token[], private readonly file: string) {}

  fail(t: Token, msg: string): never {
    throw new RulesSyntaxError(this.file, t.line, t.col, msg);
  }
  peek(): Token { return this.toks[this.i]!; }
  next(): Token { return this.toks[this.i++]!; }
  skipEos(): void { while (this.peek().type === 'eos') this.i++; }
  expect(type: TokType, what: string): Token {
    const t = this.next();
    if (t.type !== type) this.fail(t, `expected ${what}, found ${describe(t)}`);
    return t;
  }
  word(what: string): Token { return this.expect('word', what); }
  /** A statement ends at end of line, ';', or just before a closing brace. */
  endStatement(): void {
    const t = this.peek();
    if (t.type === 'eos') { this.i++; return; }
    if (t.type === '}' || t.type === 'eof') return;
    this.fail(t, `unexpected ${describe(t)}: expected end of line`);
  }
  openBrace(what: string): Token {
    const t = this.next();
    if (t.type !== '{') this.fail(t, `missing '{' after ${what}, found ${describe(t)}`);
    return t;
  }
  /** Run body for each statement until the matching '}'. */
  block(open: Token, what: string, body: (key: Token) => void): void {
    for (;;) {
      this.skipEos();
      const t = this.peek();
      if (t.type === '}') { this.i++; return; }
      if (t.type === 'eof') this.fail(open, `missing '}': the ${what} block opened here is never closed`);
      if (t.type !== 'word') this.fail(t, `expected a keyword, found ${describe(t)}`);
      this.i++;
      body(t);
      this.endStatement();
    }
  }
  onOff(what: string): boolean {
    const t = this.word(`on or off after ${what}`);
    if (t.value === 'on') return true;
    if (t.value === 'off') return false;
    return this.fail(t, `expected on or off after ${what}, found '${t.value}'`);
  }
  integer(t: Token, what: string, range: readonly [number, number]): number {
    if (!/^\d+$/.test(t.value)) this.fail(t, `bad number '${t.value}' for ${what}`);
    const n = Number(t.value);
    if (n < range[0] || n > range[1]) this.fail(t, `${what} ${n} is outside ${range[0]}-${range[1]}`);
    return n;
  }
  duration(t: Token, what: string, range: readonly [number, number]): number {
    const m = /^(\d+)(ms|s|m)$/.exec(t.value);
    if (!m) this.fail(t, `bad duration '${t.value}' for ${what} (write e.g. 500ms, 30s, 2m)`);
    const ms = Number(m![1]) * (m![2] === 'ms' ? 1 : m![2] === 's' ? 1000 : 60_000);
    if (ms < range[0] || ms > range[1]) this.fail(t, `${what} ${t.value} is outside ${range[0]}ms-${range[1] / 1000}s`);
    return ms;
  }

  parse(defaultName: string): RuleSetSpec {
    let name: string | null = null;
    let service: RuleSetSpec['service'] | null = null;
    let policy: PolicySpec | null = null;
    let esp: RuleSetSpec['esp'] | null = null;
    let notices: NoticeSpec[] | null = null;
    let noticeTokens: Token[] = [];
    const seen = new Map<string, Token>();
    const once = (key: string, t: Token) => {
      const prev = seen.get(key);
      if (prev) this.fail(t, `duplicate ${key} (first given at line ${prev.line})`);
      seen.set(key, t);
    };
    for (;;) {
      this.skipEos();
      const t = this.next();
      if (t.type === 'eof') break;
      if (t.type !== 'word') this.fail(t, `expected a keyword, found ${describe(t)}`);
      switch (t.value) {
        case 'protocol': {
          once('protocol', t);
          const n = this.word('a protocol name after protocol');
          if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(n.value)) this.fail(n, `bad protocol name '${n.value}'`);
          name = n.value;
          break;
        }
        case 'initial': {
          const k = this.word("'service-address' after initial");
          if (k.value !== 'service-address') this.fail(k, `unknown keyword 'initial ${k.value}' (expected initial service-address)`);
          once('initial service-address', t);
          if (this.peek().type === '=') this.i++;
          service = this.serviceAddress(this.word('an address after initial service-address'));
          break;
        }
        case 'policy': {
          once('policy block', t);
          policy = this.policy(this.openBrace('policy'));
          break;
        }
        case 'ISP':
        case 'ESP': {
          const k = this.word(`'part' after ${t.value}`);
          if (k.value !== 'part') this.fail(k, `expected '${t.value} part', found '${t.value} ${k.value}'`);
          once(`${t.value} part`, t);
          const open = this.openBrace(`${t.value} part`);
          if (t.value === 'ISP') [notices, noticeTokens] = this.ispPart(open);
          else esp = this.espPart(open);
          break;
        }
        default:
          this.fail(t, `unknown keyword '${t.value}' (expected one of: ${TOP_KEYS.join(', ')})`);
      }
      this.endStatement();
    }
    const first = this.toks[0]!;
    if (!service) this.fail(first, "missing required 'initial service-address'");
    if (!notices) this.fail(first, "missing required 'ISP part' block");
    if (notices!.length === 0) this.fail(seen.get('ISP part')!, "the 'ISP part' block declares no notice");
    const pol: PolicySpec = policy ?? { ...DEFAULT_POLICY };
    // A notice's bounce-check defaults to the policy's.
    const resolved = notices!.map((n, k) => ({ ...n, bounceCheck: this.noticeBounce.get(noticeTokens[k]!) ?? pol.bounceCheck }));
    return { version: 1, name: name ?? defaultName, service: service!, policy: pol, esp: esp ?? { check: false }, notices: resolved };
  }

  serviceAddress(t: Token): RuleSetSpec['service'] {
    const v = t.value;
    let host: string | null = null;
    let portText = v;
    const m = /^(?:\[([^\]]*)\]|([^:]*)):(.*)$/.exec(v);
    if (m) {
      host = m[1] ?? m[2]!;
      portText = m[3]!;
      if (host === '*' || host === '') host = null;
      else if (canonicalIp(host) === null) this.fail(t, `bad service address '${v}': '${host}' is not an IP address`);
    }
    if (!/^\d+$/.test(portText)) this.fail(t, `bad number '${portText}' for the service port (write 21, 10.0.0.5:21 or [::1]:21)`);
    const port = Number(portText);
    if (port < 1 || port > 65535) this.fail(t, `service port ${port} is outside 1-65535`);
    return { host, port };
  }

  policy(open: Token): PolicySpec {
    const p: PolicySpec = { ...DEFAULT_POLICY };
    const seen = new Map<string, Token>();
    this.block(open, 'policy', (k) => {
      if (!(POLICY_KEYS as readonly string[]).includes(k.value)) this.fail(k, `unknown keyword '${k.value}' in policy (expected one of: ${POLICY_KEYS.join(', ')})`);
      const prev = seen.get(k.value);
      if (prev) this.fail(k, `duplicate ${k.value} (first given at line ${prev.line})`);
      seen.set(k.value, k);
      switch (k.value) {
        case 'max-line': p.maxLine = this.integer(this.word('a number after max-line'), 'max-line', LIMITS.maxLine); break;
        case 'max-pending': p.maxPending = this.integer(this.word('a number after max-pending'), 'max-pending', LIMITS.maxPending); break;
        case 'accept-timeout': p.acceptTimeoutMs = this.duration(this.word('a duration after accept-timeout'), 'accept-timeout', LIMITS.acceptTimeoutMs); break;
        case 'bounce-check': p.bounceCheck = this.onOff('bounce-check'); break;
        case 'inspect-data': p.inspectData = this.onOff('inspect-data'); break;
        case 'on-long-line': {
          const v = this.word('reset or pass after on-long-line');
          if (v.value !== 'reset' && v.value !== 'pass') this.fail(v, `expected reset or pass after on-long-line, found '${v.value}'`);
          p.onLongLine = v.value;
          break;
        }
      }
    });
    return p;
  }

  espPart(open: Token): RuleSetSpec['esp'] {
    const e = { check: false };
    let seenCheck: Token | null = null;
    this.block(open, 'ESP part', (k) => {
      if (k.value !== 'check') this.fail(k, `unknown keyword '${k.value}' in ESP part (expected: check)`);
      if (seenCheck) this.fail(k, `duplicate check (first given at line ${seenCheck.line})`);
      seenCheck = k;
      e.check = this.onOff('check');
    });
    return e;
  }

  ispPart(open: Token): [NoticeSpec[], Token[]] {
    const out: NoticeSpec[] = [];
    const toks: Token[] = [];
    const names = new Map<string, Token>();
    this.block(open, 'ISP part', (k) => {
      if (k.value !== 'notice') this.fail(k, `unknown keyword '${k.value}' in ISP part (expected: notice)`);
      const n = this.word('a notice name after notice');
      if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(n.value)) this.fail(n, `bad notice name '${n.value}'`);
      const prev = names.get(n.value.toLowerCase());
      if (prev) this.fail(n, `duplicate notice '${n.value}' (first defined at line ${prev.line})`);
      names.set(n.value.toLowerCase(), n);
      out.push(this.notice(k, n, this.openBrace(`notice ${n.value}`)));
      toks.push(k);
    });
    return [out, toks];
  }

  notice(kw: Token, nameTok: Token, open: Token): NoticeSpec {
    const name = nameTok.value;
    let direction: Direction | null = null;
    let action: Action | null = null;
    let actionTok: Token | null = null;
    let format: FormatName | null = null;
    let match: MatchSpec | null = null;
    let matchTok: Token | null = null;
    let bounce: boolean | undefined;
    let acceptFrom: AcceptFrom = 'server';
    let acceptTok: Token | null = null;
    const refuse: NoticeSpec['refuse'] = {};
    const seen = new Map<string, Token>();
    this.block(open, `notice ${name}`, (k) => {
      if (!(NOTICE_KEYS as readonly string[]).includes(k.value)) this.fail(k, `unknown keyword '${k.value}' in notice ${name} (expected one of: ${NOTICE_KEYS.join(', ')})`);
      let key = k.value;
      if (key === 'refuse') {
        const how = this.word('reply or replace after refuse');
        if (how.value !== 'reply' && how.value !== 'replace') this.fail(how, `expected reply or replace after refuse, found '${how.value}'`);
        key = `refuse ${how.value}`;
        const s = this.expect('string', `a string after ${key}`);
        refuse[how.value as 'reply' | 'replace'] = s.value;
      }
      const prev = seen.get(key);
      if (prev) this.fail(k, `duplicate ${key} in notice ${name} (first given at line ${prev.line})`);
      seen.set(key, k);
      switch (key) {
        case 'direction': {
          const v = this.word('client-to-server or server-to-client after direction');
          if (v.value === 'client-to-server') direction = 'c2s';
          else if (v.value === 'server-to-client') direction = 's2c';
          else this.fail(v, `unknown direction '${v.value}' (expected client-to-server or server-to-client)`);
          break;
        }
        case 'action': {
          const v = this.word('connect-back or listen-outside after action');
          if (v.value !== 'connect-back' && v.value !== 'listen-outside') this.fail(v, `unknown action '${v.value}' (expected connect-back or listen-outside)`);
          action = v.value as Action;
          actionTok = v;
          break;
        }
        case 'format': {
          const v = this.word('an address format after format');
          if (!isFormatName(v.value)) this.fail(v, `unknown format '${v.value}' (known: ${FORMAT_NAMES.join(', ')})`);
          format = v.value as FormatName;
          break;
        }
        case 'bounce-check': bounce = this.onOff('bounce-check'); break;
        case 'accept-from': {
          const v = this.word('server or any after accept-from');
          if (v.value !== 'server' && v.value !== 'any') this.fail(v, `expected server or any after accept-from, found '${v.value}'`);
          acceptFrom = v.value as AcceptFrom;
          acceptTok = v;
          break;
        }
        case 'match': {
          let nocase = false;
          let t = this.next();
          if (t.type === 'word' && t.value === 'nocase') { nocase = true; t = this.next(); }
          if (t.type === 'string') match = { kind: 'template', text: t.value, nocase };
          else if (t.type === 'regex' && !nocase) match = { kind: 'regex', source: t.value, flags: t.flags ?? '' };
          else if (t.type === 'regex') this.fail(t, "nocase applies to templates; give a regular expression the i flag instead");
          else this.fail(t, `expected a "template" or /regular expression/ after match, found ${describe(t)}`);
          matchTok = t;
          break;
        }
      }
    });
    const missing = (['direction', 'match', 'format', 'action'] as const).find((k) => !seen.has(k));
    if (missing) this.fail(kw, `notice ${name} has no '${missing}' (required: direction, match, format, action)`);
    const want: Action = direction === 'c2s' ? 'connect-back' : 'listen-outside';
    if (action !== want) {
      this.fail(actionTok!, `action ${action} does not fit direction ${direction === 'c2s' ? 'client-to-server' : 'server-to-client'}: ` +
        'a client-to-server notice announces a listener on the client side (connect-back); a server-to-client one, a listener on the server side (listen-outside)');
    }
    // The outside relay's passive listener always takes only the control connection's client.
    if (acceptTok && action !== 'connect-back') this.fail(acceptTok, `accept-from applies to connect-back notices only (notice ${name} is ${action})`);
    const spec: NoticeSpec = { name, direction: direction!, action: action!, format: format!, match: match!, bounceCheck: true, acceptFrom, refuse };
    // Compile now so a bad template or regex is reported at its own position.
    try {
      compileNotice(spec);
    } catch (err) {
      if (!(err instanceof CompileProblem)) throw err;
      const mt = matchTok!;
      if (mt.type === 'string') {
        // Column of the offending char inside the string (+1 for the opening quote when empty).
        const col = mt.cols && mt.cols.length > 0 ? mt.cols[Math.min(err.index, mt.cols.length - 1)]! : mt.col + 1;
        throw new RulesSyntaxError(this.file, mt.line, col, err.message);
      }
      this.fail(mt, err.message);
    }
    if (bounce !== undefined) this.noticeBounce.set(kw, bounce);
    return spec;
  }
}

/** Parse a rules file's text. `file` is used in messages and gives the default protocol name. */
export function parseRules(text: string, file: string): RuleSet {
  const base = file.replace(/^.*[\\/]/, '').replace(/\.rules$/, '') || 'rules';
  const spec = new Parser(tokenize(text, file), file).parse(base);
  return compileRuleSet(spec, file);
}
