/** Turn a RuleSetSpec into matchers; also the init-data round trip for the outside relay. */
import { ProtocolError } from '../errors.js';
import { FORMAT_NAMES, isFormatName } from './formats.js';
import type { NoticeRule, NoticeSpec, RuleSet, RuleSetSpec } from './types.js';

export class CompileProblem extends Error {
  /** Index into the template text or regex source the problem is at. */
  constructor(readonly index: number, message: string) {
    super(message);
  }
}

const ESCAPE_RE = /[\\^$.*+?()[\]{}|/]/g;
function escapeRegex(s: string): string {
  return s.replace(ESCAPE_RE, '\\$&').replace(/[\x00-\x1f\x7f-\xff]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export const PLACEHOLDERS = ['addr', '*', 'word'] as const;

/**
 * Template: literal text with {addr} (the address, exactly once), {*} (any text) and {word}
 * (one or more non-blank characters); {{ and }} are literal braces. Anchored to the whole line.
 */
export function compileTemplate(text: string): { source: string; start: string } {
  let source = '^';
  let start = '';
  let seenPlaceholder = false;
  let addrCount = 0;
  let i = 0;
  let lit = '';
  const flushLit = () => {
    source += escapeRegex(lit);
    if (!seenPlaceholder) start += lit;
    lit = '';
  };
  while (i < text.length) {
    const c = text[i]!;
    if (c === '{' && text[i + 1] === '{') { lit += '{'; i += 2; continue; }
    if (c === '}' && text[i + 1] === '}') { lit += '}'; i += 2; continue; }
    if (c === '}') throw new CompileProblem(i, "unmatched '}' in template (write }} for a literal brace)");
    if (c === '{') {
      const end = text.indexOf('}', i);
      if (end < 0) throw new CompileProblem(i, "unclosed '{' in template (write {{ for a literal brace)");
      const name = text.slice(i + 1, end);
      flushLit();
      seenPlaceholder = true;
      if (name === 'addr') {
        if (++addrCount > 1) throw new CompileProblem(i, 'template has {addr} more than once');
        source += '(?<addr>.+?)';
      } else if (name === '*') source += '.*?';
      else if (name === 'word') source += '\\S+';
      else throw new CompileProblem(i, `unknown placeholder {${name}} (known: {addr}, {*}, {word})`);
      i = end + 1;
      continue;
    }
    lit += c;
    i++;
  }
  flushLit();
  if (addrCount === 0) throw new CompileProblem(0, 'template has no {addr} placeholder');
  return { source: source + '$', start };
}

/**
 * The literal text every match of an anchored regex begins with, so the inspector can release a
 * partial line early. Conservative: stops at the first metacharacter; '' when unanchored or when
 * a top-level alternation could bypass the prefix.
 */
export function regexStart(source: string): string {
  if (!source.startsWith('^')) return '';
  // Top-level '|' means the leading literal is not required.
  let depth = 0;
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') { i++; continue; }
    if (inClass) { if (c === ']') inClass = false; continue; }
    if (c === '[') inClass = true;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) return '';
  }
  let out = '';
  let i = 1;
  while (i < source.length) {
    const c = source[i]!;
    let ch: string | null = null;
    let len = 1;
    if (c === '\\') {
      const n = source[i + 1];
      if (n === undefined) break;
      if (n === 'x' && /^[0-9a-fA-F]{2}$/.test(source.slice(i + 2, i + 4))) { ch = String.fromCharCode(parseInt(source.slice(i + 2, i + 4), 16)); len = 4; }
      else if (/[\\^$.*+?()[\]{}|/\-:,]/.test(n) || n === ' ') { ch = n; len = 2; }
      else if (n === 't') { ch = '\t'; len = 2; }
      else break; // \d, \s, \b, backreferences...: not a literal
    } else if (/[\^$.*+?()[\]{}|]/.test(c)) break;
    else ch = c;
    const next = source[i + len];
    if (next === '?' || next === '*' || next === '{') break; // optional: not guaranteed
    out += ch;
    i += len;
    if (next === '+') break; // one is guaranteed, more are not
  }
  return out;
}

export function compileNotice(n: NoticeSpec): NoticeRule {
  let source: string;
  let flags: string;
  let start: string;
  if (n.match.kind === 'template') {
    const t = compileTemplate(n.match.text);
    source = t.source;
    start = t.start;
    flags = n.match.nocase ? 'i' : '';
  } else {
    source = n.match.source;
    flags = n.match.flags;
    start = regexStart(source);
  }
  let regex: RegExp;
  try {
    regex = new RegExp(source, flags + 'd');
  } catch (err) {
    throw new CompileProblem(0, `bad regular expression: ${(err as Error).message.replace(/^Invalid regular expression: /, '')}`);
  }
  if (!/\(\?<addr>/.test(source)) throw new CompileProblem(0, 'regular expression has no (?<addr>...) group for the address');
  return { ...n, regex, start: Buffer.from(start, 'latin1'), nocase: flags.includes('i') };
}

export function compileRuleSet(spec: RuleSetSpec, file: string): RuleSet {
  return {
    file,
    spec,
    name: spec.name,
    service: spec.service,
    policy: spec.policy,
    esp: spec.esp,
    notices: spec.notices.map(compileNotice),
  };
}

/**
 * What the outside relay needs, as JSON-able data: the whole spec (notices, policy, ESP part), so
 * it can listen for passive notices, enforce the same limits, and re-run the checks ([0113], [0115]).
 */
export function serializeForOutside(rules: RuleSet): RuleSetSpec {
  return JSON.parse(JSON.stringify(rules.spec)) as RuleSetSpec;
}

/** Validate init data received over the session and compile it; throws ProtocolError. */
export function ruleSetFromInit(json: unknown): RuleSet {
  const bad = (what: string): never => {
    throw new ProtocolError(`rules init data: ${what}`);
  };
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  const isInt = (v: unknown, lo: number, hi: number): v is number => Number.isInteger(v) && (v as number) >= lo && (v as number) <= hi;
  if (!isObj(json) || json.version !== 1) return bad('not version 1 rules');
  if (typeof json.name !== 'string') return bad('name');
  const svc = json.service;
  if (!isObj(svc) || !(svc.host === null || typeof svc.host === 'string') || !isInt(svc.port, 1, 65535)) return bad('service');
  const p = json.policy;
  if (!isObj(p) || !isInt(p.maxLine, LIMITS.maxLine[0], LIMITS.maxLine[1]) || (p.onLongLine !== 'reset' && p.onLongLine !== 'pass') ||
    !isInt(p.acceptTimeoutMs, LIMITS.acceptTimeoutMs[0], LIMITS.acceptTimeoutMs[1]) || !isInt(p.maxPending, LIMITS.maxPending[0], LIMITS.maxPending[1]) ||
    typeof p.bounceCheck !== 'boolean' || typeof p.inspectData !== 'boolean') return bad('policy');
  if (!isObj(json.esp) || typeof json.esp.check !== 'boolean') return bad('esp');
  if (!Array.isArray(json.notices) || json.notices.length === 0) return bad('notices');
  const names = new Set<string>();
  const notices: NoticeSpec[] = json.notices.map((n: unknown, i: number) => {
    if (!isObj(n) || typeof n.name !== 'string' || names.has(n.name.toLowerCase())) return bad(`notice ${i}: name`);
    names.add(n.name.toLowerCase());
    if (n.direction !== 'c2s' && n.direction !== 's2c') return bad(`notice ${n.name}: direction`);
    if (n.action !== (n.direction === 'c2s' ? 'connect-back' : 'listen-outside')) return bad(`notice ${n.name}: action`);
    if (typeof n.format !== 'string' || !isFormatName(n.format)) return bad(`notice ${n.name}: format (known: ${FORMAT_NAMES.join(', ')})`);
    const m = n.match;
    let match: NoticeSpec['match'];
    if (isObj(m) && m.kind === 'template' && typeof m.text === 'string' && typeof m.nocase === 'boolean') match = { kind: 'template', text: m.text, nocase: m.nocase };
    else if (isObj(m) && m.kind === 'regex' && typeof m.source === 'string' && (m.flags === '' || m.flags === 'i')) match = { kind: 'regex', source: m.source, flags: m.flags };
    else return bad(`notice ${n.name}: match`);
    if (typeof n.bounceCheck !== 'boolean') return bad(`notice ${n.name}: bounceCheck`);
    // Absent = 'server' (init data from a relay that predates accept-from).
    const acceptFrom = n.acceptFrom ?? 'server';
    if ((acceptFrom !== 'server' && acceptFrom !== 'any') || (acceptFrom === 'any' && n.action !== 'connect-back')) return bad(`notice ${n.name}: acceptFrom`);
    const r = n.refuse;
    if (!isObj(r) || (r.reply !== undefined && typeof r.reply !== 'string') || (r.replace !== undefined && typeof r.replace !== 'string')) return bad(`notice ${n.name}: refuse`);
    const refuse: NoticeSpec['refuse'] = {};
    if (typeof r.reply === 'string') refuse.reply = r.reply;
    if (typeof r.replace === 'string') refuse.replace = r.replace;
    return { name: n.name, direction: n.direction, action: n.action as NoticeSpec['action'], format: n.format, match, bounceCheck: n.bounceCheck, acceptFrom, refuse };
  });
  const spec: RuleSetSpec = {
    version: 1,
    name: json.name,
    service: { host: svc.host as string | null, port: svc.port },
    policy: { maxLine: p.maxLine, onLongLine: p.onLongLine, acceptTimeoutMs: p.acceptTimeoutMs, maxPending: p.maxPending, bounceCheck: p.bounceCheck, inspectData: p.inspectData },
    esp: { check: json.esp.check },
    notices,
  };
  try {
    return compileRuleSet(spec, '<init data>');
  } catch (err) {
    if (err instanceof CompileProblem) return bad(err.message);
    throw err;
  }
}

/** Accepted ranges for numeric settings (inclusive). */
export const LIMITS = {
  maxLine: [64, 1_048_576],
  acceptTimeoutMs: [100, 3_600_000],
  maxPending: [1, 1024],
} as const satisfies Record<string, readonly [number, number]>;

export const DEFAULT_POLICY = {
  maxLine: 2048,
  onLongLine: 'reset',
  acceptTimeoutMs: 30_000,
  maxPending: 4,
  bounceCheck: true,
  inspectData: false,
} as const;
