import net, { type Socket } from 'node:net';
import { joinHostPort } from '../config.js';
import { ErrorCode, Result, resultFromSocketError, resultName } from '../errors.js';
import type { Logger } from '../log.js';
import { DEFAULT_MAX_FRAME, HEADER_SIZE } from '../session/frame.js';
import type { Stream } from '../session/stream.js';
import { setWriteHighWaterMark } from './link.js';

/**
 * Carry one TCP connection over one stream, both ways, with backpressure:
 * socket reads pause while the stream's window is shut; window is granted back
 * only once the socket has taken the bytes. Half-close travels as FIN.
 */
export function pipeStream(
  stream: Stream,
  sock: Socket,
  /** The relay's timeouts for carried connections (limits.* in its config). */
  guard: Guard,
  { onDone, held, filter }: {
    onDone?: (result: number, message: string) => void;
    /** What the stream delivered before the socket existed (holdStream). */
    held?: HeldData;
    /** Inspect socket→stream bytes (the outside relay's own notice check); returns what to send. */
    filter?: Filter;
  } = {},
): void {
  // One object per connection and shared handlers (`this` is the socket or the stream) rather
  // than a dozen closures: idle connections must stay small.
  const p = new Pipe(stream, sock, onDone, filter, guard);
  (sock as Piped<Socket>)[kPipe] = p;
  (stream as Piped<Stream>)[kPipe] = p;
  sock.setNoDelay(true);
  // A peer that vanished (no FIN, no RST) is found by the kernel's probes, not left for ever.
  if (guard.keepAliveMs) sock.setKeepAlive(true, guard.keepAliveMs);
  if (guard.idleMs) sock.setTimeout(guard.idleMs);
  sock.on('timeout', onSocketTimeout);
  setWriteHighWaterMark(sock, 256 * 1024);
  if (!filter) readWithHeadroom(sock);
  sock.on('data', onSocketData); // with headroom reads: only bytes Node read before
  sock.on('end', onSocketEnd);
  sock.on('drain', onSocketDrain);
  sock.on('error', onSocketError);
  sock.on('close', onSocketClose);
  stream.ondata = onStreamData;
  stream.ondrain = onStreamDrain;
  stream.onend = onStreamEnd;
  stream.onreset = onStreamReset;
  if (held) {
    // pipeStream has replaced the holding handlers; replay what arrived before.
    for (const b of held.bufs) onStreamData.call(stream, b);
    held.bufs = [];
    if (held.ended) onStreamEnd.call(stream);
  }
  if (sock.isPaused()) sock.resume();
}

type Filter = { data(buf: Buffer): Buffer[]; end(): Buffer[] };

/**
 * What a relay enforces on each carried connection, counted on its own socket (bytes either way
 * count as activity): `idleMs` without a byte closes it (0: never); once one direction has ended,
 * `halfCloseMs` without a byte closes it (0: never; a server that never answers a client's FIN
 * would otherwise hold both relays' resources for ever); `keepAliveMs`: TCP keep-alive probes
 * after that much idleness (0: off). Closing sends RESET(TIMEOUT) to the other relay.
 */
export interface Guard { idleMs: number; halfCloseMs: number; keepAliveMs: number; log: Logger }

export function guardOf(limits: { idle_timeout_ms: number; half_close_timeout_ms: number; tcp_keepalive_ms: number }, log: Logger): Guard {
  return { idleMs: limits.idle_timeout_ms, halfCloseMs: limits.half_close_timeout_ms, keepAliveMs: limits.tcp_keepalive_ms, log };
}
const kPipe = Symbol('pipe');
type Piped<T> = T & { [kPipe]: Pipe };

class Pipe {
  /** Bytes written to the socket but not yet granted back to the stream (the socket is full). */
  ungranted = 0;
  done = false;
  sawEnd = false;
  /** Socket writes are corked until the end of this loop turn. */
  corked = false;
  /** Stream bytes held until the end of this loop turn (see onStreamData). */
  queued: Buffer | null = null;
  /** Of those, bytes not granted yet: the socket was full. */
  heldBack = 0;
  /** The socket's own read block while it moves bulk, filled up to `at` (see readWithHeadroom). */
  block: Block | null = null;
  at = 0;
  /** One direction has ended: the guard's half-close timeout runs. */
  halfClosed = false;

  constructor(
    readonly stream: Stream,
    readonly sock: Socket,
    readonly onDone: ((result: number, message: string) => void) | undefined,
    readonly filter: Filter | undefined,
    readonly guard: Guard,
  ) {}

  /** The first FIN either way: from now on the shorter of the two timeouts applies. */
  ended(): void {
    const g = this.guard;
    if (this.halfClosed || !g.halfCloseMs) return;
    this.halfClosed = true;
    this.sock.setTimeout(g.idleMs ? Math.min(g.idleMs, g.halfCloseMs) : g.halfCloseMs);
  }

  /** Socket → stream. `headroom`: free bytes in front of buf for the frame header. */
  take(buf: Buffer, headroom: number): void {
    let ok = true;
    if (this.filter) for (const part of this.filter.data(buf)) ok = this.stream.write(part);
    else ok = this.stream.write(buf, headroom);
    if (!ok) this.sock.pause();
  }

  /** Stream → socket; window is granted back once the socket takes the bytes. */
  send(buf: Buffer): void {
    if (this.sock.write(buf, () => written(buf))) this.stream.consumed(buf.length);
    else this.ungranted += buf.length;
  }

  /** Write the queued view; grant what was held back if the socket takes it now. */
  sendQueued(): void {
    const q = this.queued;
    if (!q) return;
    this.queued = null;
    const ok = this.sock.write(q, () => written(q));
    if (this.heldBack) {
      if (ok) this.stream.consumed(this.heldBack);
      else this.ungranted += this.heldBack;
      this.heldBack = 0;
    }
  }

  finish(result: number, message: string): void {
    if (this.done) return;
    this.done = true;
    this.onDone?.(result, message);
  }
}

function onSocketData(this: Piped<Socket>, buf: Buffer): void {
  this[kPipe].take(buf, 0);
}

function onSocketEnd(this: Piped<Socket>): void {
  const p = this[kPipe];
  p.sawEnd = true;
  if (p.filter) for (const part of p.filter.end()) p.stream.write(part);
  p.stream.end();
  p.ended();
}

function onSocketTimeout(this: Piped<Socket>): void {
  const p = this[kPipe];
  if (p.done) return;
  const g = p.guard;
  const half = p.halfClosed && (!g.idleMs || g.halfCloseMs < g.idleMs);
  const ms = half ? g.halfCloseMs : g.idleMs;
  const reason = half ? `half-closed with no bytes for ${ms} ms (limits.half_close_timeout_ms)` : `no bytes for ${ms} ms (limits.idle_timeout_ms)`;
  g.log.info({ event: 'stream.timeout', code: ErrorCode.IDLE_TIMEOUT, stream: p.stream.id, peer: joinHostPort(this.remoteAddress ?? '?', this.remotePort ?? 0), reason }, 'carried connection closed: idle');
  p.stream.reset(Result.TIMEOUT);
  p.finish(Result.TIMEOUT, reason);
  this.resetAndDestroy();
}

function onSocketDrain(this: Piped<Socket>): void {
  const p = this[kPipe];
  if (p.ungranted) {
    const n = p.ungranted;
    p.ungranted = 0;
    p.stream.consumed(n);
  }
}

function onSocketError(this: Piped<Socket>, err: Error): void {
  const result = resultFromSocketError(err as NodeJS.ErrnoException);
  this[kPipe].stream.reset(result);
  this[kPipe].finish(result, err.message);
}

function onSocketClose(this: Piped<Socket>): void {
  const { stream } = this[kPipe];
  // Both halves ended cleanly: our FIN may still wait behind window-held data; let it go out.
  if (this[kPipe].sawEnd && stream.remoteEnded) this[kPipe].finish(Result.OK, 'closed');
  else if (stream.state !== 'closed') {
    // The socket went away before both directions finished: tell the peer.
    stream.reset(Result.CANCELLED);
    this[kPipe].finish(Result.CANCELLED, 'connection closed before both directions ended');
  } else this[kPipe].finish(stream.result, 'closed');
}

function onStreamData(this: Stream, buf: Buffer): void {
  const p = (this as Piped<Stream>)[kPipe];
  // Small pieces to an idle socket go at once (latency).
  if (!p.corked && buf.length < 4096 && p.sock.writableLength === 0) return p.send(buf);
  // Bulk waits for the end of this loop turn: the session delivers a frame one 16 KiB TLS record
  // at a time, and records read in place lie back to back, so a turn's pieces become few writes
  // (one view while they are adjacent) and one writev.
  const q = p.queued;
  if (q && q.buffer === buf.buffer && q.byteOffset + q.length === buf.byteOffset) {
    p.queued = Buffer.from(q.buffer, q.byteOffset, q.length + buf.length);
  } else {
    p.sendQueued();
    p.queued = buf;
  }
  // Grant at once what the socket would take now (as write() returning true would): waiting
  // for the end of the turn would hold the sender's window back.
  if (p.heldBack === 0 && p.sock.writableLength + p.queued!.length <= p.sock.writableHighWaterMark) this.consumed(buf.length);
  else p.heldBack += buf.length;
  if (!p.corked) {
    p.corked = true;
    p.sock.cork();
    setImmediate(uncork, p);
  }
}

function uncork(p: Pipe): void {
  p.sendQueued();
  p.corked = false;
  p.sock.uncork();
}

function onStreamDrain(this: Stream): void {
  (this as Piped<Stream>)[kPipe].sock.resume();
}

function onStreamEnd(this: Stream): void {
  const p = (this as Piped<Stream>)[kPipe];
  p.sendQueued();
  p.sock.end();
  p.ended();
}

function onStreamReset(this: Stream, result: number, message: string): void {
  const p = (this as Piped<Stream>)[kPipe];
  p.finish(result, message);
  if (!p.sock.destroyed) p.sock.resetAndDestroy();
}

/**
 * The stream.closed log line, from a closure that holds only what it logs; none at all when
 * debug lines are off (idle connections must stay small).
 */
export function logClosed(log: Logger, fields: object): ((result: number, message: string) => void) | undefined {
  if (!log.isLevelEnabled('debug')) return undefined;
  return (r, m) => log.debug({ ...fields, event: 'stream.closed', result: resultName(r), reason: m }, 'stream closed');
}

export interface HeldData { bufs: Buffer[]; ended: boolean }

/**
 * Keep what a stream delivers before its socket exists (a data connection whose far end
 * has not connected yet). Bounded by the stream's window: nothing is granted until piped.
 */
export function holdStream(stream: Stream): HeldData {
  const held: HeldData = { bufs: [], ended: false };
  stream.ondata = (b) => held.bufs.push(b);
  stream.onend = () => { held.ended = true; };
  return held;
}

/** Pipe two sockets both ways with half-close; an error on either destroys both. */
export function joinSockets(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const kill = () => { a.destroy(); b.destroy(); };
  a.on('error', kill);
  b.on('error', kill);
  // Both ended → close; one closed abruptly → close the other.
  a.on('close', () => { if (!b.destroyed && !b.writableEnded) b.destroy(); });
  b.on('close', () => { if (!a.destroyed && !a.writableEnded) a.destroy(); });
  if (a.isPaused()) a.resume();
  if (b.isPaused()) b.resume();
}

/**
 * Most bytes one read takes: one DATA frame, at the session's default frame limit. Reads this
 * big quarter the syscalls (and the ACKs the kernel sends for them) of Node's 64 KiB.
 */
export const READ_SIZE = DEFAULT_MAX_FRAME;
/** A read this big says the socket moves bulk: its next reads go into a block of its own. */
const BULK_READ = 16 * 1024;
/** Consecutive reads of a bulk socket fill one block back to back. */
export const BLOCK_SIZE = 4 * READ_SIZE;
/** Blocks kept for reuse: warm memory, no page faults, no garbage. */
const SPARE_BLOCKS = 8;

/** A read block and what became of its bytes; reused once they have all been taken. */
export class Block {
  /** Bytes read into it and handed on. */
  handed = 0;
  /** Bytes of those that are done with (see written()). */
  taken = 0;
  /** Still some socket's read block. */
  reading = true;
  constructor(readonly buf: Buffer) {}
}
const blockOf = new WeakMap<ArrayBufferLike, Block>();
const spare: Block[] = [];

export function takeBlock(): Block {
  let b = spare.pop();
  if (b) {
    b.handed = 0;
    b.taken = 0;
    b.reading = true;
  } else {
    b = new Block(Buffer.allocUnsafeSlow(BLOCK_SIZE));
    blockOf.set(b.buf.buffer, b);
  }
  return b;
}

export function maybeReuse(b: Block): void {
  // `spare.includes`: a report that adds no bytes (all of a read delivered and reported inside
  // parse()) must not offer the same block twice, or two readers would share it.
  if (!b.reading && b.taken === b.handed && spare.length < SPARE_BLOCKS && !spare.includes(b)) spare.push(b);
}

/**
 * These bytes are done with (a socket has written them, or they were copied): a block they
 * came from may be reused. Bytes never reported (a stream reset, a session gone, a consumer
 * that does not report) just leave their block to the GC. A view handed over by Session.parse()
 * is reported only after parse() returns: the session settles the block's account then.
 */
export function written(buf: Buffer): void {
  const b = blockOf.get(buf.buffer);
  if (!b) return;
  b.taken += buf.length;
  maybeReuse(b);
}

/** Handles n bytes read into the buffer it gave last; returns where the next read goes. */
export type Reader = (this: Socket, n: number) => Buffer;

/** net.Socket's `onread` machinery; Node offers the option only to sockets it constructs for us. */
const sym = new Map(Object.getOwnPropertySymbols(new net.Socket()).map((s) => [s.description, s]));
const kBuffer = sym.get('kBuffer');
const kBufferCb = sym.get('kBufferCb');
const kBufferGen = sym.get('kBufferGen');
const kReader = Symbol('reader');
/** Node asks for the next read buffer right after the read callback: this is its answer. */
let nextRead: Buffer | null = null;

/**
 * Have Node read `sock` (TCP or TLS) into buffers we choose, calling `reader` after each read,
 * instead of a new buffer and a 'data' event per read. False where Node lacks the hooks.
 */
export function hookReads(sock: Socket, first: Buffer, reader: Reader): boolean {
  const s = sock as unknown as Record<symbol, unknown> & { _handle?: { useUserBuffer?(b: Uint8Array): void } };
  if (!kBuffer || !kBufferCb || !kBufferGen || typeof s._handle?.useUserBuffer !== 'function' || s[kBuffer]) return false;
  s[kReader] = reader;
  s[kBufferCb] = dispatchRead;
  s[kBufferGen] = readBuffer;
  s[kBuffer] = first;
  s._handle.useUserBuffer(first);
  return true;
}

function dispatchRead(this: Socket & { [kReader]: Reader }, n: number): void {
  nextRead = this[kReader](n);
}

function readBuffer(): Buffer {
  return nextRead!;
}

/** Where plain sockets not moving bulk read; what lands here is copied out before any other read. */
let common: Buffer | null = null;
let commonBody: Buffer | null = null;

/**
 * Read a plain TCP socket into buffers with HEADER_SIZE free bytes in front, so each read becomes
 * one DATA frame in one buffer. A bulk socket reads into a block of its own, frame after frame,
 * so a loop turn's frames lie back to back and leave as one TLS write without a copy
 * (relay/link.ts). An idle socket holds no buffer of its own. Where Node lacks the hooks,
 * 'data' events stay the way in.
 */
function readWithHeadroom(sock: Socket): void {
  if ((sock as Socket & { encrypted?: boolean }).encrypted) return;
  common ??= Buffer.allocUnsafeSlow(HEADER_SIZE + READ_SIZE);
  commonBody ??= common.subarray(HEADER_SIZE);
  hookReads(sock, commonBody, onPlainRead);
}

function onPlainRead(this: Socket, n: number): Buffer {
  const p = (this as Piped<Socket>)[kPipe];
  let payload: Buffer;
  const b = p.block;
  if (b) {
    payload = b.buf.subarray(p.at + HEADER_SIZE, p.at + HEADER_SIZE + n); // no copy
    p.at += HEADER_SIZE + n;
    b.handed += HEADER_SIZE + n;
    if (n < BULK_READ || b.buf.length - p.at < HEADER_SIZE + BULK_READ) {
      p.block = null;
      b.reading = false;
    }
  } else {
    const frame = Buffer.allocUnsafe(HEADER_SIZE + n);
    common!.copy(frame, HEADER_SIZE, HEADER_SIZE, HEADER_SIZE + n);
    payload = frame.subarray(HEADER_SIZE);
  }
  if (n >= BULK_READ && !p.block) {
    p.block = takeBlock();
    p.at = 0;
  }
  p.take(payload, HEADER_SIZE);
  if (b && !p.block) maybeReuse(b);
  const nb = p.block?.buf;
  return nb ? nb.subarray(p.at + HEADER_SIZE, Math.min(nb.length, p.at + HEADER_SIZE + READ_SIZE)) : commonBody!;
}
