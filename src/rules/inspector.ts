/**
 * The per-control-connection inspector: finds notices (announced addresses) in the byte stream of
 * each direction, line by line, and passes everything else through unchanged and promptly.
 *
 * Only the current partial line is ever held back, and only while it could still become a notice
 * (its first bytes agree with some rule's literal line start). Everything else streams through as
 * slices of the input chunks, so bulk traffic costs one indexOf per line.
 */
import { ErrorCode, PortsideError, Result, type ErrorCodeName } from '../errors.js';
import { parseAddress, renderAddress, type FormatName } from './formats.js';
import { canonicalIp } from './ip.js';
import type { AcceptFrom, Action, Direction, NoticeRule, RuleSet } from './types.js';

/** What the relay may send when it refuses a notice (from the rule's `refuse` lines). */
export interface Refusal {
  /** Send back to the side that sent the notice (e.g. FTP "501 ..." to the client). */
  reply?: Buffer;
  /** Send onward in place of the notice (e.g. "425 ..." to the client instead of a 227). */
  replace?: Buffer;
}

export interface Notice {
  /** Rule/notice name for logs. */
  rule: string;
  direction: Direction;
  action: Action;
  format: FormatName;
  /** Announced host ('' when the format carries none, e.g. 229: the caller uses the server's address). */
  host: string;
  port: number;
  /** 0 when host is ''. */
  family: 0 | 4 | 6;
  /** Whether checkBounce applies (the rule's bounce-check, defaulting to the policy's). */
  bounceCheck: boolean;
  /** connect-back: who may open the data connection ('server' or 'any' intranet host). */
  acceptFrom: AcceptFrom;
  refusal: Refusal;
  /**
   * Build the replacement line with a new address, keeping the original line's other text and
   * line ending. Throws PortsideError PS_ERR_RULE_REFUSED when the format cannot carry the address
   * (IPv6 into PORT, 227 or DCC) or the port is out of range.
   */
  rewrite(host: string, port: number): Buffer;
}

export type InspectItem =
  | { kind: 'data'; buf: Buffer }
  | { kind: 'notice'; notice: Notice; line: Buffer }
  | {
      kind: 'error';
      code: ErrorCodeName;
      message: string;
      /** The offending line when complete (it was NOT passed on). */
      line?: Buffer;
      rule?: string;
      /** True: the relay must reset the control connection (on-long-line reset); the direction is dead. */
      fatal: boolean;
      /** From the rule's refuse lines (only for refused notices). */
      reply?: Buffer;
      replace?: Buffer;
    };

export interface InspectorOptions {
  /** Directions to inspect; others pass through raw. Default both. */
  directions?: readonly Direction[];
}

interface DirState {
  rules: NoticeRule[];
  maxStart: number;
  /** Bytes of the current partial line being held; capacity never exceeds maxLine. */
  held: Buffer | null;
  heldLen: number;
  /** undecided: may still be a notice; candidate: starts like one; pass: stream to end of line. */
  mode: 'undecided' | 'candidate' | 'pass';
  dead: boolean;
}

const lower = (b: number): number => (b >= 0x41 && b <= 0x5a ? b | 0x20 : b);

export class Inspector {
  readonly rules: RuleSet;
  private readonly maxLine: number;
  private readonly st: Record<Direction, DirState>;

  constructor(rules: RuleSet, opts: InspectorOptions = {}) {
    this.rules = rules;
    this.maxLine = rules.policy.maxLine;
    const dirs = opts.directions ?? ['c2s', 's2c'];
    const mk = (d: Direction): DirState => {
      const rs = dirs.includes(d) ? rules.notices.filter((n) => n.direction === d) : [];
      return { rules: rs, maxStart: Math.max(0, ...rs.map((r) => r.start.length)), held: null, heldLen: 0, mode: 'undecided', dead: false };
    };
    this.st = { c2s: mk('c2s'), s2c: mk('s2c') };
  }

  /** Bytes currently held for a direction (never more than policy.maxLine). */
  bufferedBytes(direction: Direction): number {
    return this.st[direction].heldLen;
  }

  /** Feed bytes of one direction; returns items IN ORDER: pass-through data and detected notices. */
  push(direction: Direction, chunk: Buffer): InspectItem[] {
    const st = this.st[direction];
    const items: InspectItem[] = [];
    if (st.dead || chunk.length === 0) return items;
    if (st.rules.length === 0) return [{ kind: 'data', buf: chunk }];
    const n = chunk.length;
    let run = 0; // start of the pass-through run not yet emitted
    const flush = (to: number) => {
      if (to > run) items.push({ kind: 'data', buf: run === 0 && to === n ? chunk : chunk.subarray(run, to) });
      run = to;
    };
    let pos = 0;
    while (pos < n) {
      if (st.mode === 'pass') {
        const nl = chunk.indexOf(10, pos);
        if (nl < 0) { pos = n; break; }
        pos = nl + 1;
        st.mode = 'undecided';
        continue;
      }
      const nl = chunk.indexOf(10, pos);
      const end = nl < 0 ? n : nl + 1;
      const heldLen = st.heldLen;
      if (st.mode === 'undecided') {
        const v = this.classify(st, chunk, pos, end);
        if (v === 'no') {
          // Held bytes exist only at the start of a push (pos 0, run 0), so order is kept.
          if (heldLen > 0) items.push({ kind: 'data', buf: this.takeHeld(st) });
          st.mode = 'pass';
          continue;
        }
        if (v === 'yes') st.mode = 'candidate';
      }
      if (heldLen + (end - pos) > this.maxLine) {
        flush(pos);
        const rule = this.rules.policy.onLongLine;
        const msg = `${direction} line longer than max-line ${this.maxLine} bytes`;
        if (rule === 'reset') {
          items.push({ kind: 'error', code: ErrorCode.LINE_TOO_LONG, message: `${msg}: control connection reset`, fatal: true });
          st.held = null;
          st.heldLen = 0;
          st.dead = true;
          return items;
        }
        items.push({ kind: 'error', code: ErrorCode.LINE_TOO_LONG, message: `${msg}: passed on uninspected`, fatal: false });
        if (heldLen > 0) items.push({ kind: 'data', buf: this.takeHeld(st) });
        st.mode = 'pass';
        continue;
      }
      if (nl >= 0) {
        const line = heldLen > 0 ? Buffer.concat([this.takeHeld(st), chunk.subarray(pos, end)]) : chunk.subarray(pos, end);
        st.mode = 'undecided';
        const item = this.matchLine(st, direction, line);
        if (item === null) {
          // Not a notice: its bytes join the pass-through run (the held part goes out first).
          if (heldLen > 0) items.push({ kind: 'data', buf: line });
          else { pos = end; continue; }
        } else {
          flush(pos);
          items.push(item);
        }
        run = end;
        pos = end;
        continue;
      }
      // A partial line that may still become a notice: hold it until its end arrives.
      flush(pos);
      this.hold(st, chunk.subarray(pos, n));
      run = n;
      pos = n;
    }
    flush(n);
    return items;
  }

  /** End of stream for a direction: release a held partial line as plain data (it has no line end, so it is no notice). */
  flush(direction: Direction): InspectItem[] {
    const st = this.st[direction];
    st.mode = 'undecided';
    if (st.dead || st.heldLen === 0) return [];
    return [{ kind: 'data', buf: this.takeHeld(st) }];
  }

  private hold(st: DirState, bytes: Buffer): void {
    const need = st.heldLen + bytes.length;
    if (!st.held || st.held.length < need) {
      // Grow geometrically (linear total copying even when fed byte by byte), capped at maxLine.
      const cap = Math.min(this.maxLine, Math.max(need, 256, (st.held?.length ?? 0) * 2));
      const nb = Buffer.allocUnsafe(cap);
      if (st.held) st.held.copy(nb, 0, 0, st.heldLen);
      st.held = nb;
    }
    bytes.copy(st.held, st.heldLen);
    st.heldLen = need;
  }

  private takeHeld(st: DirState): Buffer {
    const b = st.held!.subarray(0, st.heldLen);
    st.held = null;
    st.heldLen = 0;
    return b;
  }

  /** Could the line starting with held + chunk[pos..end) be a notice, judging by rule line starts? */
  private classify(st: DirState, chunk: Buffer, pos: number, end: number): 'yes' | 'maybe' | 'no' {
    const k = Math.min(st.maxStart, st.heldLen + (end - pos));
    const complete = end > pos && chunk[end - 1] === 10;
    let maybe = false;
    for (const r of st.rules) {
      const s = r.start;
      const m = Math.min(k, s.length);
      let ok = true;
      for (let j = 0; j < m; j++) {
        let b = j < st.heldLen ? st.held![j]! : chunk[pos + j - st.heldLen]!;
        let c = s[j]!;
        if (r.nocase) { b = lower(b); c = lower(c); }
        if (b !== c) { ok = false; break; }
      }
      if (!ok) continue;
      if (k >= s.length) return 'yes';
      maybe = true;
    }
    // A complete line shorter than every matching start can never match.
    return maybe && !complete ? 'maybe' : 'no';
  }

  private matchLine(st: DirState, direction: Direction, line: Buffer): InspectItem | null {
    let end = line.length;
    if (end > 0 && line[end - 1] === 10) end--;
    if (end > 0 && line[end - 1] === 13) end--;
    const content = line.toString('latin1', 0, end);
    const ending = line.subarray(end);
    for (const rule of st.rules) {
      const m = rule.regex.exec(content);
      const span = m?.indices?.groups?.addr;
      if (!m || !span) continue;
      const addrText = m.groups!.addr!;
      const parsed = parseAddress(rule.format, addrText);
      const refusal: Refusal = {};
      if (rule.refuse.reply !== undefined) refusal.reply = Buffer.from(rule.refuse.reply, 'latin1');
      if (rule.refuse.replace !== undefined) refusal.replace = Buffer.from(rule.refuse.replace, 'latin1');
      if (typeof parsed === 'string') {
        return {
          kind: 'error', code: ErrorCode.RULE_REFUSED, rule: rule.name, fatal: false, line,
          message: `notice ${rule.name} refused: ${parsed}`, ...refusal,
        };
      }
      const [a0, a1] = span;
      const format = rule.format;
      const notice: Notice = {
        rule: rule.name,
        direction,
        action: rule.action,
        format,
        host: parsed.host,
        port: parsed.port,
        family: parsed.family,
        bounceCheck: rule.bounceCheck,
        acceptFrom: rule.acceptFrom,
        refusal,
        rewrite(host: string, port: number): Buffer {
          const text = content.slice(0, a0) + renderAddress(format, addrText, host, port) + content.slice(a1);
          return Buffer.concat([Buffer.from(text, 'latin1'), ending]);
        },
      };
      return { kind: 'notice', notice, line };
    }
    return null;
  }
}

/**
 * The FTP bounce check, generalised: an announced host must be the announcing peer's own address
 * (for client-to-server notices the client's, for server-to-client ones the server's), unless the
 * rule turns bounce-check off. Returns the refusal as an error, or null when the notice may proceed.
 * IPv4-mapped IPv6 peers (::ffff:a.b.c.d) compare equal to their IPv4 form.
 */
export function checkBounce(notice: Notice, peerHost: string): PortsideError | null {
  if (!notice.bounceCheck || notice.host === '') return null;
  const a = canonicalIp(notice.host);
  const b = canonicalIp(peerHost);
  if (a !== null && a === b) return null;
  const who = notice.direction === 'c2s' ? "client's" : "server's";
  return new PortsideError(
    ErrorCode.RULE_REFUSED,
    `notice ${notice.rule} announces ${notice.host}, not the ${who} own address ${peerHost} (bounce refused)`,
    Result.REFUSED_BY_RULE,
  );
}
