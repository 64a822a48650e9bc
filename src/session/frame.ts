/**
 * Session frames (docs/protocol.md). Every frame is a 12-byte header and a payload:
 *
 *   0      1      2             4                8                12
 *   | type | flags| reserved=0  |  stream id u32 |  length u32    | payload (length bytes)
 *
 * All integers big-endian. Stream 0 is the session itself.
 */
export const HEADER_SIZE = 12;

/** Command values. Names follow the patent (Fig. 7) where it has one. */
export const FrameType = {
  TRIAL_REQ: 0x01,
  TRIAL_RSP: 0x02,
  TRIAL_FIN: 0x03,
  INIT: 0x04,
  INIT_ACK: 0x05,
  INSIDE_CONNECT_REQ: 0x10,
  INSIDE_CONNECT_RSP: 0x11,
  DATA: 0x12, // data-transfer.req, both directions
  OUTSIDE_CONNECT_REQ: 0x13,
  OUTSIDE_CONNECT_RSP: 0x14,
  OUTSIDE_LISTEN_REQ: 0x15,
  OUTSIDE_LISTEN_RSP: 0x16,
  /** A client agent's carried connection (client sessions only; docs/protocol.md, "The client leg"). */
  CLIENT_CONNECT_REQ: 0x17,
  CLIENT_CONNECT_RSP: 0x18,
  WINDOW_UPDATE: 0x20,
  FIN: 0x21,
  RESET: 0x22,
  PING: 0x30,
  GOAWAY: 0x31,
  /** Inside relay → outside relay: stopping gracefully, open no new streams to me (docs/protocol.md, "Graceful stop"). */
  DRAINING: 0x32,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

const known = new Set<number>(Object.values(FrameType));
export function isKnownType(t: number): boolean {
  return known.has(t);
}
const names = new Map<number, string>(Object.entries(FrameType).map(([k, v]) => [v, k]));
export function frameTypeName(t: number): string {
  return names.get(t) ?? `0x${t.toString(16)}`;
}

export const Flag = {
  /** PING: this is the answer. */
  ACK: 0x01,
} as const;

export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
  /** A DATA piece that came outside the transport's sealing (client session, src/session/transport.ts). */
  clear?: boolean;
}

/** Defaults; both sides may be configured lower, never higher than MAX_FRAME_LIMIT. */
export const DEFAULT_MAX_FRAME = 256 * 1024;
export const MAX_FRAME_LIMIT = 16 * 1024 * 1024;
/**
 * Stream window. On a busy 2-core machine a window update can wait several ms for a CPU; 1 MiB
 * held one stream well below what the relays can move (the client leg, one process longer, to
 * about 0.5 Gbit/s), 4 MiB lets them run (docs/protocol.md, "Flow control").
 */
export const DEFAULT_WINDOW = 4 * 1024 * 1024;
