import { FlowControlError, MalformedFrameError, PortsideError, ProtocolError, Result, resultName } from '../errors.js';
import { decodeAddress, FrameDecoder } from './decode.js';
import { encodeAddress, encodeFrame, writeHeader } from './encode.js';
import { DEFAULT_MAX_FRAME, DEFAULT_WINDOW, Flag, FrameType, HEADER_SIZE, frameTypeName, type Frame } from './frame.js';
import { Stream, type StreamKind } from './stream.js';

/**
 * inside/outside: the relays' session (Fig. 7). client: a client agent's session to the outside
 * relay's client port; client-port: the outside relay's end of it (docs/protocol.md, "The client leg").
 */
export type Role = 'inside' | 'outside' | 'client' | 'client-port';

/** Which side opens odd stream ids (the other opens even ones), so both may open at once. */
const OPENS_ODD: Record<Role, boolean> = { outside: true, 'client-port': true, inside: false, client: false };
/** The connect request each role sends when it opens a stream. */
const OPEN_KIND: Record<Role, StreamKind | null> = { outside: 'inside-connect', inside: 'outside-connect', client: 'client-connect', 'client-port': null };
/** The connect request each role accepts from its peer. */
const ACCEPTS: Record<Role, number | null> = {
  inside: FrameType.INSIDE_CONNECT_REQ,
  outside: FrameType.OUTSIDE_CONNECT_REQ,
  'client-port': FrameType.CLIENT_CONNECT_REQ,
  client: null,
};
const REQ_OF_KIND: Record<StreamKind, number> = {
  'inside-connect': FrameType.INSIDE_CONNECT_REQ,
  'outside-connect': FrameType.OUTSIDE_CONNECT_REQ,
  'client-connect': FrameType.CLIENT_CONNECT_REQ,
};
const KIND_OF_REQ = new Map<number, StreamKind>(Object.entries(REQ_OF_KIND).map(([k, v]) => [v, k as StreamKind]));

export interface SessionOptions {
  role: Role;
  /**
   * Bytes out. Called with a batch of buffers to write in order; with `clearData`, `clear` names
   * (by identity) the buffers that are pre-sealed DATA payloads.
   */
  onWrite: (chunks: Buffer[], clear?: ReadonlySet<Buffer>) => void;
  /**
   * The transport seals frames but may leave pre-sealed DATA payloads as they are (a client
   * session, src/session/transport.ts): payloads of streams after sealFromHere() go out marked
   * clear, and parse(chunk, true) accepts such payloads.
   */
  clearData?: boolean;
  /** The peer asks to open a stream. Call stream.accept()/refuse() via session.accept/refuse. */
  onStream?: (stream: Stream) => void;
  /** A stream-0 or request/response control frame the session itself does not handle. */
  onControl?: (frame: Frame) => void;
  /** The session ended (error, go-away from the peer, or close()). Called once. */
  onClose?: (err: PortsideError | null, remoteResult: number | null) => void;
  maxFrame?: number;
  window?: number;
  maxStreams?: number;
  /** Schedules the flush of batched output (told how many bytes wait); tests may pass a synchronous one. */
  schedule?: (fn: () => void, pendingBytes: number) => void;
}

/**
 * The multiplexed session between an inside and an outside relay: a pure state machine.
 * Bytes in through parse(), bytes out through onWrite. It never touches a socket.
 *
 * Stream ids: the outside relay opens odd ids (inside-connect.req), the inside relay even
 * ids (outside-connect.req), so both may open at once without a collision.
 */
export class Session {
  readonly role: Role;
  readonly maxFrame: number;
  readonly windowSize: number;
  readonly maxStreams: number;
  private readonly decoder: FrameDecoder;
  private readonly streams = new Map<number, Stream>();
  private nextId: number;
  private out: Buffer[] = [];
  /** Buffers in `out` that are pre-sealed payloads (clearData). */
  private clearOut: Set<Buffer> | null = null;
  private flushScheduled = false;
  private readonly schedule: (fn: () => void, pendingBytes: number) => void;
  private outBytes = 0;
  private readonly flushFn = () => this.flush();
  private readonly frames: Frame[] = [];
  /** The transport said its buffer is full; streams hold back until unblock(). */
  blocked = false;
  /** Streams told to wait for the transport: only these are woken when it drains. */
  private readonly waiting = new Set<Stream>();
  established = false;
  closed = false;
  goingAway = false;
  lastReceived = 0;
  bytesIn = 0;
  bytesOut = 0;
  /** DATA bytes handed to streams' ondata: views into parse()'s input the consumer may still hold. */
  delivered = 0;

  constructor(private readonly opts: SessionOptions) {
    this.role = opts.role;
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    this.windowSize = opts.window ?? DEFAULT_WINDOW;
    this.maxStreams = opts.maxStreams ?? 65536;
    this.decoder = new FrameDecoder(this.maxFrame);
    this.nextId = OPENS_ODD[opts.role] ? 1 : 2;
    this.schedule = opts.schedule ?? setImmediate;
  }

  get streamCount(): number {
    return this.streams.size;
  }

  getStream(id: number): Stream | undefined {
    return this.streams.get(id);
  }

  /** Feed bytes from the transport. A protocol violation ends the session (onClose with the error). */
  parse(chunk: Buffer, clear = false): void {
    if (this.closed) return;
    this.bytesIn += chunk.length;
    const frames = this.frames;
    frames.length = 0;
    try {
      if (clear && !this.opts.clearData) throw new ProtocolError('clear bytes on a session without a sealing transport');
      this.decoder.push(chunk, frames, clear);
      for (let i = 0; i < frames.length && !this.closed; i++) this.handle(frames[i]);
    } catch (err) {
      const e = err instanceof PortsideError ? err : new ProtocolError(String((err as Error)?.message ?? err));
      this.fail(e);
    } finally {
      frames.length = 0;
    }
  }

  /** Open a stream to the peer: inside-connect.req (outside relay), outside-connect.req (inside relay), client-connect.req (client agent). */
  open(host: string, port: number, extra?: Buffer): Stream {
    if (this.closed) throw new PortsideError('PS_ERR_SESSION_CLOSED', 'session is closed', Result.SESSION_CLOSED);
    const kind = OPEN_KIND[this.role];
    if (!kind) throw new ProtocolError(`a ${this.role} session does not open streams`);
    const id = this.nextId;
    this.nextId += 2;
    const s = new Stream(this, id, kind, host, port, this.windowSize);
    s.local = true;
    this.streams.set(id, s);
    const addr = encodeAddress(host, port);
    const payload = extra ? Buffer.concat([addr, extra]) : addr;
    this.push(encodeFrame(REQ_OF_KIND[kind], 0, id, payload));
    return s;
  }

  /** Answer a peer's open request: result OK opens the stream, anything else refuses it. */
  answer(stream: Stream, result: number): void {
    if (stream.state !== 'opening' || this.closed) return;
    this.push(encodeFrame(REQ_OF_KIND[stream.kind] + 1, 0, stream.id, Buffer.of(result)));
    if (result === Result.OK) stream._opened(result);
    else stream.close(result);
  }

  /** Send a control frame (handshake, init data, listen requests). */
  sendControl(type: number, stream: number, payload?: Buffer, flags = 0): void {
    if (this.closed) return;
    this.push(encodeFrame(type, flags, stream, payload));
  }

  ping(payload: Buffer = Buffer.alloc(8)): void {
    this.sendControl(FrameType.PING, 0, payload);
  }

  /** Tell the peer we are ending the session, then close. */
  goAway(result: number, message = ''): void {
    if (this.closed) return;
    const msg = Buffer.from(message.slice(0, 512), 'utf8');
    this.push(encodeFrame(FrameType.GOAWAY, 0, 0, Buffer.concat([Buffer.of(result), msg])));
    this.flush();
    this.close(null, null);
  }

  /** End the session locally: every stream is reset with SESSION_CLOSED. */
  close(err: PortsideError | null, remoteResult: number | null = null): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of [...this.streams.values()]) s.close(Result.SESSION_CLOSED, err ? err.code : 'session closed');
    this.streams.clear();
    this.opts.onClose?.(err, remoteResult);
  }

  /** Transport backpressure from the glue. */
  setBlocked(blocked: boolean): void {
    if (this.blocked === blocked) return;
    this.blocked = blocked;
    if (blocked || this.waiting.size === 0) return;
    const woken = [...this.waiting];
    this.waiting.clear();
    for (const s of woken) if (!this.blocked && s.bufferedBytes === 0 && s.state === 'open') s.ondrain?.();
  }

  /** @internal a stream's write() returned false because the transport is blocked. */
  _waitForTransport(s: Stream): void {
    this.waiting.add(s);
  }

  // ---- internals used by Stream ----

  /**
   * Send as much of buf as window and frame size allow; return the unsent rest (or null).
   * `headroom`: bytes in front of buf (same memory, ours to overwrite) where the header may go,
   * so header and payload leave as one buffer (see onWrite in relay/link.ts).
   */
  _sendData(s: Stream, buf: Buffer, headroom = 0): Buffer | null {
    let off = 0;
    while (off < buf.length && s.sendWindow > 0) {
      let n = Math.min(buf.length - off, s.sendWindow, this.maxFrame);
      let clear = false;
      if (this.opts.clearData) {
        clear = s.sentBytes >= s.sealedFrom;
        // A frame never mixes bytes before and after sealFromHere().
        if (!clear && s.sentBytes + n > s.sealedFrom) n = s.sealedFrom - s.sentBytes;
      }
      s.sentBytes += n;
      if (clear) {
        const h = Buffer.allocUnsafe(HEADER_SIZE);
        writeHeader(h, 0, FrameType.DATA, 0, s.id, n);
        const p = off === 0 && n === buf.length ? buf : buf.subarray(off, off + n);
        this.out.push(h, p);
        (this.clearOut ??= new Set()).add(p);
      } else if (off === 0 && headroom >= HEADER_SIZE) {
        const frame = Buffer.from(buf.buffer, buf.byteOffset - HEADER_SIZE, HEADER_SIZE + n);
        writeHeader(frame, 0, FrameType.DATA, 0, s.id, n);
        this.out.push(frame);
      } else {
        const h = Buffer.allocUnsafe(HEADER_SIZE); // from Node's shared pool: no allocation of its own
        writeHeader(h, 0, FrameType.DATA, 0, s.id, n);
        this.out.push(h, off === 0 && n === buf.length ? buf : buf.subarray(off, off + n));
      }
      this.bytesOut += HEADER_SIZE + n;
      this.outBytes += HEADER_SIZE + n;
      s.sendWindow -= n;
      off += n;
    }
    this.scheduleFlush();
    return off < buf.length ? buf.subarray(off) : null;
  }
  /** @internal one DATA frame whose payload is `pieces` (Stream.writev() checked window and size). */
  _sendPieces(s: Stream, pieces: Buffer[], total: number): void {
    const h = Buffer.allocUnsafe(HEADER_SIZE);
    writeHeader(h, 0, FrameType.DATA, 0, s.id, total);
    this.out.push(h, ...pieces);
    if (this.opts.clearData && s.sentBytes >= s.sealedFrom) {
      const clear = (this.clearOut ??= new Set());
      for (const p of pieces) clear.add(p);
    }
    s.sentBytes += total;
    this.bytesOut += HEADER_SIZE + total;
    this.outBytes += HEADER_SIZE + total;
    s.sendWindow -= total;
    this.scheduleFlush();
  }
  _sendFin(s: Stream): void {
    this.push(encodeFrame(FrameType.FIN, 0, s.id));
  }
  _sendReset(s: Stream, result: number): void {
    this.push(encodeFrame(FrameType.RESET, 0, s.id, Buffer.of(result)));
  }
  _sendWindowUpdate(s: Stream, n: number): void {
    const p = Buffer.allocUnsafe(4);
    p.writeUInt32BE(n, 0);
    this.push(encodeFrame(FrameType.WINDOW_UPDATE, 0, s.id, p));
  }
  _forget(s: Stream): void {
    this.streams.delete(s.id);
    this.waiting.delete(s);
  }

  /** Write everything batched so far now. */
  flush(): void {
    this.flushScheduled = false;
    if (this.out.length === 0) return;
    const chunks = this.out;
    const clear = this.clearOut;
    this.out = [];
    this.clearOut = null;
    this.outBytes = 0;
    this.opts.onWrite(chunks, clear ?? undefined);
  }

  private push(frame: Buffer): void {
    this.out.push(frame);
    this.bytesOut += frame.length;
    this.outBytes += frame.length;
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    this.schedule(this.flushFn, this.outBytes);
  }

  /** End the session for a violation: GOAWAY with its result to the peer, then close with it. */
  fail(err: PortsideError): void {
    if (this.closed) return;
    const msg = Buffer.from(err.message.slice(0, 512), 'utf8');
    this.push(encodeFrame(FrameType.GOAWAY, 0, 0, Buffer.concat([Buffer.of(err.result), msg])));
    this.flush();
    this.close(err, null);
  }

  private handle(f: Frame): void {
    switch (f.type) {
      case FrameType.DATA: return this.onData(f);
      case FrameType.WINDOW_UPDATE: {
        if (f.payload.length !== 4) throw new MalformedFrameError('window update must be 4 bytes');
        const s = this.streams.get(f.stream);
        const inc = f.payload.readUInt32BE(0);
        if (inc === 0) throw new FlowControlError('window update of 0');
        if (s) {
          if (s.sendWindow + inc > 0x7fffffff) throw new FlowControlError('window overflow');
          s._grant(inc);
        }
        return;
      }
      case FrameType.FIN: {
        const s = this.streams.get(f.stream);
        if (s && s.receivable && !s.remoteEnded) s._remoteEnd();
        return;
      }
      case FrameType.RESET: {
        const s = this.streams.get(f.stream);
        const result = f.payload.length >= 1 ? f.payload[0] : Result.GENERAL_FAILURE;
        s?.close(result === Result.OK ? Result.CANCELLED : result, `reset by peer: ${resultName(result)}`);
        return;
      }
      case FrameType.PING:
        this.lastReceived = Date.now();
        if (!(f.flags & Flag.ACK)) this.sendControl(FrameType.PING, 0, Buffer.from(f.payload), Flag.ACK);
        else this.opts.onControl?.(f);
        return;
      case FrameType.GOAWAY: {
        const result = f.payload.length >= 1 ? f.payload[0] : Result.GENERAL_FAILURE;
        const msg = f.payload.subarray(1).toString('utf8');
        const err = result === Result.OK || result === Result.SHUTDOWN ? null
          : new PortsideError('PS_ERR_GOAWAY', `peer ended the session: ${resultName(result)}${msg ? `: ${msg}` : ''}`, result);
        this.goingAway = true;
        this.close(err, result);
        return;
      }
      case FrameType.INSIDE_CONNECT_REQ:
      case FrameType.OUTSIDE_CONNECT_REQ:
      case FrameType.CLIENT_CONNECT_REQ: return this.onOpen(f);
      case FrameType.INSIDE_CONNECT_RSP:
      case FrameType.OUTSIDE_CONNECT_RSP:
      case FrameType.CLIENT_CONNECT_RSP: {
        if (f.payload.length !== 1) throw new MalformedFrameError('connect response must be 1 byte');
        const s = this.streams.get(f.stream);
        if (s && s.state === 'opening' && this.isLocal(f.stream)) s._opened(f.payload[0]);
        return;
      }
      default:
        this.opts.onControl?.(f);
    }
  }

  private isLocal(id: number): boolean {
    return (id & 1) === (OPENS_ODD[this.role] ? 1 : 0);
  }

  private onOpen(f: Frame): void {
    if (!this.established) throw new ProtocolError('stream opened before the session was initialised');
    if (f.type !== ACCEPTS[this.role]) throw new ProtocolError(`a ${this.role} session cannot receive ${frameTypeName(f.type)}`);
    if (f.stream === 0 || this.isLocal(f.stream)) throw new ProtocolError(`stream id ${f.stream} has the wrong parity`);
    if (this.streams.has(f.stream)) throw new ProtocolError(`stream id ${f.stream} already in use`);
    const { host, port } = decodeAddress(f.payload.subarray(0, 3 + (f.payload.length >= 3 ? f.payload[2] : 0)));
    const kind = KIND_OF_REQ.get(f.type)!;
    const s = new Stream(this, f.stream, kind, host, port, this.windowSize);
    const extra = f.payload.subarray(3 + f.payload[2]);
    s.extra = extra.length ? Buffer.from(extra) : undefined;
    if (this.streams.size >= this.maxStreams || this.goingAway) {
      this.push(encodeFrame(f.type + 1, 0, f.stream, Buffer.of(Result.LIMIT_EXCEEDED)));
      return;
    }
    this.streams.set(f.stream, s);
    if (this.opts.onStream) this.opts.onStream(s);
    else this.answer(s, Result.NOT_ALLOWED);
  }

  private onData(f: Frame): void {
    const s = this.streams.get(f.stream);
    if (!s) return; // a stream we already closed: its in-flight data is dropped
    if (!s.receivable || s.remoteEnded) throw new ProtocolError(`data on stream ${f.stream} that is not open`);
    const n = f.payload.length;
    if (f.clear && !s.acceptsClear) throw new ProtocolError(`clear bytes on stream ${f.stream}, which takes only sealed ones`);
    if (n > s.recvWindow) throw new FlowControlError(`stream ${f.stream} sent ${n} bytes beyond its window of ${s.recvWindow}`);
    s.recvWindow -= n;
    s.receivedBytes += n;
    if (s.ondata) {
      this.delivered += n;
      s.ondata(f.payload, f.clear === true);
    }
  }
}
