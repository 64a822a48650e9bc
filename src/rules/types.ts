/** The data model of a rules file (docs/rules.md). Specs are plain JSON; RuleSet adds compiled matchers. */
import type { FormatName } from './formats.js';

export type Direction = 'c2s' | 's2c';
export type Action = 'connect-back' | 'listen-outside';
export type OnLongLine = 'reset' | 'pass';
/** Who may open a connect-back data connection at the inside relay: the server only, or any intranet host. */
export type AcceptFrom = 'server' | 'any';

export interface PolicySpec {
  /** Longest line (bytes, line ending included) the inspector holds while it could be a notice. */
  maxLine: number;
  /** What to do with a candidate line longer than maxLine. */
  onLongLine: OnLongLine;
  /** A data connection must arrive within this long after its notice. */
  acceptTimeoutMs: number;
  /** Announced but not yet connected data connections, per control connection. */
  maxPending: number;
  /** Default for notices: the announced host must be the announcing peer's own address. */
  bounceCheck: boolean;
  /** Whether data connections are inspected too (default no: they are relayed raw). */
  inspectData: boolean;
}

export type MatchSpec =
  | { kind: 'template'; text: string; nocase: boolean }
  | { kind: 'regex'; source: string; flags: string };

export interface NoticeSpec {
  name: string;
  direction: Direction;
  action: Action;
  format: FormatName;
  /** Template and regex text are "byte strings": one char per byte (latin1). */
  match: MatchSpec;
  bounceCheck: boolean;
  /**
   * connect-back only: 'server' = the data connection must come from the control connection's server
   * address (FTP); 'any' = from any host that reaches the inside relay's listener (IRC DCC: the peer is
   * another client the server relayed the offer to). Still single-use and within accept-timeout.
   */
  acceptFrom: AcceptFrom;
  /** Latin1 byte strings sent when a notice is refused: back to its sender / onward instead of it. */
  refuse: { reply?: string; replace?: string };
}

/** Everything a rules file says, as JSON-able data (also the init data sent to the outside relay). */
export interface RuleSetSpec {
  version: 1;
  name: string;
  /** `initial service-address`: the AP's well-known address (host null = any). */
  service: { host: string | null; port: number };
  policy: PolicySpec;
  /** ESP part: whether the outside relay re-runs the client-to-server checks itself ([0115]). */
  esp: { check: boolean };
  notices: NoticeSpec[];
}

export interface NoticeRule extends NoticeSpec {
  /** Compiled with the 'd' flag; group `addr` is the address text. Matches line content without its ending. */
  regex: RegExp;
  /** Literal bytes every matching line starts with ('' = any line may match). */
  start: Buffer;
  /** Compare `start` ASCII-case-insensitively. */
  nocase: boolean;
}

export interface RuleSet {
  /** Where it came from, for messages ('<init data>' when received over the session). */
  file: string;
  spec: RuleSetSpec;
  name: string;
  service: RuleSetSpec['service'];
  policy: PolicySpec;
  esp: RuleSetSpec['esp'];
  notices: readonly NoticeRule[];
}
