/**
 * Every failure portside reports carries a stable string code (for logs and tests)
 * and, where it crosses the session, a one-byte wire result code (docs/protocol.md).
 */

/** Result codes carried on the wire (inside-connect.rsp, outside-connect.rsp, reset, go-away). */
export const Result = {
  OK: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TIMEOUT: 0x06,
  HOST_NOT_FOUND: 0x07,
  PROTOCOL_ERROR: 0x10,
  FLOW_CONTROL_ERROR: 0x11,
  FRAME_TOO_LARGE: 0x12,
  UNKNOWN_COMMAND: 0x13,
  STREAM_CLOSED: 0x14,
  AUTH_FAILED: 0x20,
  SESSION_CLOSED: 0x21,
  SHUTDOWN: 0x22,
  REFUSED_BY_RULE: 0x30,
  LIMIT_EXCEEDED: 0x31,
  LINE_TOO_LONG: 0x32,
  CANCELLED: 0x40,
} as const;
export type ResultCode = (typeof Result)[keyof typeof Result];

const resultNames = new Map<number, string>(Object.entries(Result).map(([k, v]) => [v, k]));
export function resultName(code: number): string {
  return resultNames.get(code) ?? `UNKNOWN_0x${code.toString(16).padStart(2, '0')}`;
}

/** Stable string codes; documented in docs/errors.md. */
export const ErrorCode = {
  FRAME_TOO_LARGE: 'PS_ERR_FRAME_TOO_LARGE',
  UNKNOWN_COMMAND: 'PS_ERR_UNKNOWN_COMMAND',
  MALFORMED_FRAME: 'PS_ERR_MALFORMED_FRAME',
  PROTOCOL: 'PS_ERR_PROTOCOL',
  FLOW_CONTROL: 'PS_ERR_FLOW_CONTROL',
  STREAM_RESET: 'PS_ERR_STREAM_RESET',
  SESSION_CLOSED: 'PS_ERR_SESSION_CLOSED',
  AUTH_FAILED: 'PS_ERR_AUTH_FAILED',
  AUTH_REPLAY: 'PS_ERR_AUTH_REPLAY',
  HANDSHAKE_TIMEOUT: 'PS_ERR_HANDSHAKE_TIMEOUT',
  HANDSHAKE_LIMIT: 'PS_ERR_HANDSHAKE_LIMIT',
  TLS: 'PS_ERR_TLS',
  KEEPALIVE_TIMEOUT: 'PS_ERR_KEEPALIVE_TIMEOUT',
  GOAWAY: 'PS_ERR_GOAWAY',
  FIREWALL_REFUSED: 'PS_ERR_FIREWALL_REFUSED',
  FIREWALL_AUTH: 'PS_ERR_FIREWALL_AUTH',
  FIREWALL_UNREACHABLE: 'PS_ERR_FIREWALL_UNREACHABLE',
  CONNECT_FAILED: 'PS_ERR_CONNECT_FAILED',
  NOT_ALLOWED: 'PS_ERR_NOT_ALLOWED',
  CONFIG: 'PS_ERR_CONFIG',
  RULES_SYNTAX: 'PS_ERR_RULES_SYNTAX',
  RULE_REFUSED: 'PS_ERR_RULE_REFUSED',
  LINE_TOO_LONG: 'PS_ERR_LINE_TOO_LONG',
  LIMIT: 'PS_ERR_LIMIT',
  TIMEOUT: 'PS_ERR_TIMEOUT',
  IDLE_TIMEOUT: 'PS_ERR_IDLE_TIMEOUT',
  KEY: 'PS_ERR_KEY',
  OUTSIDE_UNREACHABLE: 'PS_ERR_OUTSIDE_UNREACHABLE',
  FINGERPRINT_MISMATCH: 'PS_ERR_FINGERPRINT_MISMATCH',
  CLIENT_AUTH: 'PS_ERR_CLIENT_AUTH',
  NO_ROUTE: 'PS_ERR_NO_ROUTE',
  HOOK: 'PS_ERR_HOOK',
  STREAM_AUTH: 'PS_ERR_STREAM_AUTH',
  SESSION_AUTH: 'PS_ERR_SESSION_AUTH',
  SHUTTING_DOWN: 'PS_ERR_SHUTTING_DOWN',
} as const;
export type ErrorCodeName = (typeof ErrorCode)[keyof typeof ErrorCode];

export class PortsideError extends Error {
  readonly code: ErrorCodeName;
  /** Wire result code sent to the peer when this error ends a stream or session. */
  readonly result: number;
  constructor(code: ErrorCodeName, message: string, result: number = Result.GENERAL_FAILURE, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PortsideError';
    this.code = code;
    this.result = result;
  }
}

export class FrameTooLargeError extends PortsideError {
  constructor(length: number, max: number) {
    super(ErrorCode.FRAME_TOO_LARGE, `frame payload of ${length} bytes exceeds the maximum of ${max}`, Result.FRAME_TOO_LARGE);
  }
}
export class UnknownCommandError extends PortsideError {
  constructor(type: number) {
    super(ErrorCode.UNKNOWN_COMMAND, `unknown command 0x${type.toString(16).padStart(2, '0')}`, Result.UNKNOWN_COMMAND);
  }
}
export class MalformedFrameError extends PortsideError {
  constructor(message: string) {
    super(ErrorCode.MALFORMED_FRAME, message, Result.PROTOCOL_ERROR);
  }
}
export class ProtocolError extends PortsideError {
  constructor(message: string) {
    super(ErrorCode.PROTOCOL, message, Result.PROTOCOL_ERROR);
  }
}
export class FlowControlError extends PortsideError {
  constructor(message: string) {
    super(ErrorCode.FLOW_CONTROL, message, Result.FLOW_CONTROL_ERROR);
  }
}
export class AuthError extends PortsideError {
  constructor(message: string, code: ErrorCodeName = ErrorCode.AUTH_FAILED) {
    super(code, message, Result.AUTH_FAILED);
  }
}
export class ConfigError extends PortsideError {
  constructor(message: string) {
    super(ErrorCode.CONFIG, message, Result.GENERAL_FAILURE);
  }
}
/** A rules file that does not parse; message carries file:line:column. */
export class RulesSyntaxError extends PortsideError {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  constructor(file: string, line: number, column: number, message: string) {
    super(ErrorCode.RULES_SYNTAX, `${file}:${line}:${column}: ${message}`, Result.GENERAL_FAILURE);
    this.file = file;
    this.line = line;
    this.column = column;
  }
}

/** Map a Node socket error to a wire result code. */
export function resultFromSocketError(err: NodeJS.ErrnoException | undefined): number {
  switch (err?.code) {
    case 'ECONNREFUSED': return Result.CONNECTION_REFUSED;
    case 'EHOSTUNREACH': return Result.HOST_UNREACHABLE;
    case 'ENETUNREACH': return Result.NETWORK_UNREACHABLE;
    case 'ETIMEDOUT': return Result.TIMEOUT;
    case 'ENOTFOUND': case 'EAI_AGAIN': return Result.HOST_NOT_FOUND;
    default: return Result.GENERAL_FAILURE;
  }
}
