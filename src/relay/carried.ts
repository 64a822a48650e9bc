/**
 * One connection of a client session (client agent ⇄ outside relay's client port) seen as a
 * Duplex, so the SOCKS5 set-up code and the pipes treat it like a socket.
 *
 * It starts in the clear (inside the session's records): the SOCKS5 greeting, password and request,
 * and the answers to them. Once the connection is established both sides call seal() and every
 * byte after that travels in records sealed with this connection's own keys (src/session/seal.ts).
 * Flow control is the stream's credit window: window is granted back only as our reader takes
 * the bytes, so a slow local program holds at most one window of this connection's data.
 * Once established, the bytes take a direct path with no Duplex in it: bridge() at the outside
 * relay (to the inside relay's stream), carry() at the agent (to the program's socket).
 */
import { Duplex } from 'node:stream';
import { ErrorCode, PortsideError, Result, resultName } from '../errors.js';
import { MAX_RECORD, Opener, SealError, Sealer, deriveEarlyKey, deriveStreamKeys, newKeyShare, type KeyShare, type StreamKeys } from '../session/seal.js';
import { HEADER_SIZE } from '../session/frame.js';
import type { Stream } from '../session/stream.js';
import type { Socket } from 'node:net';
import { hookReads, written, type HeldData } from './pipe.js';

/**
 * Report a session read view done with (relay/pipe.ts written()), after the parse that handed it
 * over: the session settles its read block's account when parse() returns, and a report made
 * inside parse() could let the block be offered for reuse twice.
 */
function doneWith(view: Buffer): void {
  queueMicrotask(() => written(view));
}

/** Where carry() reads local sockets: each read is sealed (copied out) before the next. */
let shared: Buffer | null = null;
function sealRead(): Buffer {
  return (shared ??= Buffer.allocUnsafeSlow(MAX_RECORD));
}

/** A FIN while the opener holds part of a record: the peer's bytes were cut short. */
function cutShort(opener: Opener | null): SealError | null {
  return opener?.buffered ? new SealError(`the connection ended inside a sealed record (${opener.buffered} bytes of it held)`) : null;
}

let spare: KeyShare | null = null;
let refilling = false;
/**
 * A fresh key share for one connection. One is made ahead, after the loop turn that took the
 * last, so the key generation (~40 µs) is off a connection's set-up path. Each is used once.
 */
export function takeKeyShare(): KeyShare {
  const k = spare ?? newKeyShare();
  spare = null;
  if (!refilling) {
    refilling = true;
    setImmediate(() => {
      refilling = false;
      spare ??= newKeyShare();
    });
  }
  return k;
}

export interface CarriedAddresses { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number }

export class CarriedConnection extends Duplex {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  private sealer: Sealer | null = null;
  private opener: Opener | null = null;
  /** Stream bytes delivered to our readable side but not yet granted back (the reader is full). */
  private ungranted = 0;
  private full = false;
  /** carry() has taken the stream: destroying the Duplex must not touch it. */
  private retired = false;
  /** Keys made ahead by openEarly(), for seal(). */
  private keys: StreamKeys | null = null;
  /** startUp() has run; upFailed: how bridge() ends the connection on a bad record. */
  private upStarted = false;
  private upFailed: ((e: PortsideError) => void) | null = null;
  /** carry()'s stream → socket half, waiting for seal() (early mode). */
  private onSealed: (() => void) | null = null;
  /**
   * Records that came before we could open them (clear bytes on a client session, and whatever
   * follows them): they never reach the set-up reader, and are opened first once keys exist.
   */
  private recordsHeld: Buffer[] | null = null;
  /** The peer's FIN came while records were held. */
  private endHeld = false;
  /** A write waiting for the stream's window or the session's transport. */
  private writeDone: ((err?: Error | null) => void) | null = null;
  /** Called with the reason when the stream fails (reset by the peer, a bad record). */
  onfailure: ((err: PortsideError) => void) | null = null;
  /**
   * For a stream the peer opened: answer it OK just before our first byte or FIN, so the answer
   * and the first reply share a frame batch instead of costing a write of their own.
   */
  answerLater: (() => void) | null = null;

  constructor(readonly stream: Stream, addrs: CarriedAddresses = {}) {
    super({ allowHalfOpen: true, readableHighWaterMark: 256 * 1024, writableHighWaterMark: 256 * 1024 });
    this.remoteAddress = addrs.remoteAddress;
    this.remotePort = addrs.remotePort;
    this.localAddress = addrs.localAddress;
    this.localPort = addrs.localPort;
    stream.acceptsClear = true;
    stream.ondata = (buf, clear) => {
      if (this.opener || !(clear || this.recordsHeld)) return this.onStreamData(buf);
      // Held within the stream's window: granted once opened.
      (this.recordsHeld ??= []).push(buf);
    };
    stream.onend = () => {
      // Records still waiting for our keys come first: the end waits for them (openHeld()).
      if (this.recordsHeld) this.endHeld = true;
      else this.remoteEnded();
    };
    stream.ondrain = () => {
      const done = this.writeDone;
      this.writeDone = null;
      done?.();
    };
    stream.onreset = (result, message) => {
      if (this.destroyed) return;
      // A peer that just went away (CANCELLED) is an ordinary close; anything else is an error.
      if (result === Result.CANCELLED) this.destroy();
      else this.fail(new PortsideError(ErrorCode.CONNECT_FAILED, `connection reset: ${message || resultName(result)}`, result));
    };
  }

  /**
   * From now on this connection's bytes are sealed with keys of its own. `early`: bytes that
   * arrived after the peer's key share and were read in the clear (they are sealed records).
   * Nothing in the clear may be waiting to be written: everything before this call goes out in
   * the clear. After sealEarly() (agent) the next record changes to the connection's own key;
   * after openEarly() (outside relay) this only starts our own direction.
   */
  seal(own: KeyShare, peerShare: Buffer, side: 'client' | 'client-port', early?: Buffer): void {
    if (!this.sealer && this.writableLength > 0) throw new PortsideError(ErrorCode.PROTOCOL, 'cannot seal a connection with writes pending', Result.PROTOCOL_ERROR);
    const keys = this.keys ?? deriveStreamKeys(own, peerShare, side);
    this.keys = null;
    // Room for the DATA frame header in front of each record: header and record leave as one buffer.
    if (this.sealer) this.sealer.rekey(keys.send);
    else {
      this.sealer = new Sealer(keys.send, HEADER_SIZE);
      this.stream.sealFromHere();
    }
    // The outside relay passes the plaintext on into the inside relay's stream (bridge()).
    this.opener ??= new Opener(keys.recv, side === 'client-port' ? HEADER_SIZE : 0);
    if (early?.length) this.onStreamData(early, false);
    this.openHeld();
    const then = this.onSealed;
    this.onSealed = null;
    then?.();
  }

  /**
   * Agent, early mode (docs/protocol.md, "Early data"): seal every byte from now on under the
   * early key, before the outside relay's answer; seal() changes to the connection's own key.
   */
  sealEarly(earlyKey: Buffer): void {
    this.sealer = new Sealer(earlyKey, HEADER_SIZE);
    this.stream.sealFromHere();
  }

  /**
   * Outside relay, early mode: open the agent's early records as they come (held in our readable
   * side, within the stream's window, until bridge()); the record marked KEY_CHANGE switches to
   * the connection's own key. seal() later starts our direction with the same keys.
   */
  openEarly(own: KeyShare, agentShare: Buffer, sessionSecret: Buffer): void {
    this.keys = deriveStreamKeys(own, agentShare, 'client-port');
    this.opener = new Opener(deriveEarlyKey(sessionSecret, agentShare), HEADER_SIZE, this.keys.recv);
    this.openHeld();
  }

  private openHeld(): void {
    const held = this.recordsHeld;
    this.recordsHeld = null;
    if (held) for (const b of held) this.onStreamData(b);
    if (this.endHeld) {
      this.endHeld = false;
      this.remoteEnded();
    }
  }

  /** The peer's FIN, on our readable side: an end, or cut short inside a record. */
  private remoteEnded(): void {
    const cut = cutShort(this.opener);
    if (!cut) return void this.push(null);
    this.stream.onreset = null;
    this.stream.reset(cut.result);
    this.fail(cut);
  }

  /**
   * The outside relay's data path once the connection is established: this connection's stream
   * and the inside relay's stream joined directly, records opened and sealed in between, with
   * no Duplex on the way. Window is granted back on each side only once the other side's stream
   * has taken the bytes. FIN and RESET cross over. The Duplex is retired: it emits 'close' when
   * both streams are done (and `onDone` is told how).
   */
  bridge(inside: Stream, onDone: (result: number, message: string) => void, held?: HeldData): void {
    const client = this.stream;
    const sealer = this.sealer!;
    let done = false;
    const finish = (result: number, message: string) => {
      if (done) return;
      done = true;
      onDone(result, message);
      this.destroy();
    };
    if (!this.upStarted) this.startUp(inside);
    this.upFailed = (e) => finish(e.result, e.message);
    // inside → client: the relays' session delivers a frame a TLS record (16 KiB) at a time; a loop
    // turn's pieces are sealed as one record (one cipher, one frame, one write). A lone small
    // piece goes at once (latency).
    let batch: Buffer[] = [];
    let batchBytes = 0;
    let scheduled = false;
    let owed = 0;
    const flush = () => {
      scheduled = false;
      if (!batchBytes || client.state === 'closed') return;
      const pieces = batch;
      const n = batchBytes;
      batch = [];
      batchBytes = 0;
      const records = sealer.sealv(pieces);
      for (const b of pieces) doneWith(b); // sealed into buffers of their own
      let ok = true;
      for (const rec of records) ok = client.writev(rec) && ok;
      if (ok && owed === 0) inside.consumed(n);
      else owed += n;
    };
    inside.ondata = (buf) => {
      batch.push(buf);
      batchBytes += buf.length;
      if (batchBytes >= MAX_RECORD || (batch.length === 1 && buf.length < 4096)) flush();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    };
    client.ondrain = () => {
      if (!owed) return;
      const n = owed;
      owed = 0;
      inside.consumed(n);
    };
    client.onend = () => {
      const cut = cutShort(this.opener);
      if (!cut) return inside.end();
      client.onreset = null;
      client.reset(cut.result);
      inside.reset(Result.CANCELLED);
      this.onfailure?.(cut);
      finish(cut.result, cut.message);
    };
    inside.onend = () => { flush(); client.end(); };
    client.onreset = (result, message) => { inside.reset(result); finish(result, message); };
    inside.onreset = (result, message) => { client.reset(result); finish(result, message); };
    const closed = () => {
      if (client.state === 'closed' && inside.state === 'closed') finish(client.result === Result.OK ? inside.result : client.result, 'closed');
    };
    client.onclose = closed;
    inside.onclose = closed;
    if (held) {
      // What the inside stream delivered before the bridge (see holdStream): replay it.
      for (const b of held.bufs) inside.ondata!(b);
      held.bufs = [];
      if (held.ended) inside.onend();
    }
    if (client.remoteEnded) client.onend();
    if (inside.state === 'closed') inside.onreset(inside.result, 'closed before the bridge');
  }

  /**
   * The client → inside half of bridge(), which may start before the inside relay has answered
   * (early mode): the inside stream is ours, so it may carry data before its answer, and the inside
   * relay holds it until its connection exists.
   */
  startUp(inside: Stream): void {
    const client = this.stream;
    this.upStarted = true;
    // Early data opened before the bridge (openEarly()) waits in our readable side: it goes first.
    this.flushReadable((b) => inside.write(b));
    inside.ondrain = this.openInto((rec) => inside.writev(rec), (e) => {
      client.reset(e.result);
      inside.reset(Result.CANCELLED);
      this.onfailure?.(e);
      if (this.upFailed) this.upFailed(e);
      else this.destroy();
    });
  }

  /** What our readable side holds (opened before a direct path took over) goes out first, and is granted. */
  private flushReadable(write: (b: Buffer) => unknown): void {
    for (let b: Buffer | null; (b = this.read() as Buffer | null) !== null;) write(b);
    if (this.ungranted) this.stream.consumed(this.ungranted);
    this.ungranted = 0;
  }

  /**
   * Our stream's records opened and handed to `write`, each as the pieces the decipher gave (no
   * gathering copy); the stream is granted its window back only
   * once `write` has taken the plaintext (at once, or when the returned function is called on the
   * taker's drain). A bad record: `fail`, after our reset handler is dropped.
   */
  private openInto(write: (rec: Buffer[]) => boolean, fail: (e: PortsideError) => void): () => void {
    const stream = this.stream;
    const opener = this.opener!;
    let owed = 0;
    stream.ondata = (buf) => {
      let plain: Buffer[][];
      try {
        plain = opener.pushv(buf);
      } catch (err) {
        stream.onreset = null;
        return fail(err as PortsideError);
      }
      doneWith(buf); // opened into buffers of their own: the session may reuse its read block
      let ok = true;
      for (const p of plain) ok = write(p) && ok;
      if (ok && owed === 0) stream.consumed(buf.length);
      else owed += buf.length;
    };
    return () => {
      if (!owed) return;
      const n = owed;
      owed = 0;
      stream.consumed(n);
    };
  }

  /**
   * The agent's data path once the connection is established: the local program's socket and
   * this connection's stream joined directly, sealing and opening in between, with no Duplex on
   * the way (as bridge() at the outside relay). Socket reads land in one shared buffer and are
   * sealed (copied out) at once, one record per read: an idle connection holds no read buffer.
   * Window is granted back only once the socket has taken the opened bytes. In early mode
   * (sealEarly()) it may start before the answer: the program's bytes go at once as early
   * records, and the stream → socket half starts when seal() has read the answer.
   */
  carry(sock: Socket): void {
    const stream = this.stream;
    const sealer = this.sealer!;
    // The stream is the socket's now; the Duplex stays, idle, and closes with the socket.
    this.retired = true;
    let done = false;
    const abort = (err?: PortsideError) => {
      if (done) return;
      done = true;
      if (err) this.onfailure?.(err);
      if (stream.state !== 'closed') stream.reset(err?.result ?? Result.CANCELLED);
      if (!sock.destroyed) sock.resetAndDestroy();
    };
    // socket → stream, sealed: at once, even before the answer in early mode (early records).
    const take = (buf: Buffer) => {
      let ok = true;
      for (const rec of sealer.sealv(buf)) ok = stream.writev(rec) && ok;
      if (!ok) sock.pause();
    };
    hookReads(sock, sealRead(), function onRead(n) { take(sealRead().subarray(0, n)); return sealRead(); });
    sock.on('data', take); // with hooked reads: only bytes Node read before (and it keeps 'end' coming)
    stream.ondrain = () => sock.resume();
    sock.on('end', () => stream.end());
    sock.on('error', () => abort());
    sock.on('close', () => {
      // Both directions ended cleanly: our FIN may still wait behind window-held data.
      if (!(sock.readableEnded && stream.remoteEnded)) abort();
      this.destroy();
    });
    // stream → socket, opened: once sealed (in early mode the answer is still being read).
    const down = () => {
      if (done) return;
      const opener = this.opener!;
      // Bytes that came with the answer were opened into our readable side: they go first.
      this.flushReadable((b) => sock.write(b));
      sock.on('drain', this.openInto((rec) => {
        if (rec.length === 1) return sock.write(rec[0]!);
        // A record's pieces in one writev.
        sock.cork();
        let ok = true;
        for (const p of rec) ok = sock.write(p) && ok;
        sock.uncork();
        return ok;
      }, abort));
      stream.onend = () => {
        const cut = cutShort(opener);
        if (!cut) return void sock.end();
        stream.onreset = null;
        abort(cut);
      };
      stream.onreset = () => {
        done = true;
        if (!sock.destroyed) sock.resetAndDestroy();
      };
      if (stream.remoteEnded) stream.onend();
      if (stream.state === 'closed' && stream.result !== Result.OK) abort();
    };
    if (this.opener) down();
    else this.onSealed = down;
    sock.resume();
  }

  get sealed(): boolean {
    return this.sealer !== null;
  }

  /** Sockets have it; a carried connection is always "no delay" (the session batches). */
  setNoDelay(): this {
    return this;
  }

  /** Abort: the peer sees a reset stream, the local side an error-free close. */
  resetAndDestroy(): this {
    this.stream.reset(Result.CANCELLED);
    return this.destroy();
  }

  private onStreamData(buf: Buffer, fromStream = true): void {
    if (this.destroyed) return;
    let pieces: Buffer[];
    if (this.opener) {
      try {
        pieces = this.opener.push(buf);
        if (fromStream) doneWith(buf); // opened into buffers of its own: the read block may be reused
      } catch (err) {
        // Tell the peer why (its reset reaches it as PROTOCOL_ERROR), then fail with our code.
        this.stream.onreset = null;
        this.stream.reset((err as PortsideError).result ?? Result.PROTOCOL_ERROR);
        this.fail(err as PortsideError);
        return;
      }
    } else pieces = [buf];
    for (const p of pieces) if (!this.push(p)) this.full = true;
    if (!fromStream) return;
    if (this.full) this.ungranted += buf.length;
    else this.stream.consumed(buf.length);
  }

  private fail(err: PortsideError): void {
    if (this.destroyed) return;
    this.onfailure?.(err);
    this.destroy(err);
  }

  override _read(): void {
    this.full = false;
    if (this.ungranted) {
      const n = this.ungranted;
      this.ungranted = 0;
      this.stream.consumed(n);
    }
  }

  private answerNow(): void {
    const a = this.answerLater;
    this.answerLater = null;
    a?.();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.answerLater) this.answerNow();
    let ok = true;
    if (this.sealer) for (const rec of this.sealer.seal(chunk)) ok = this.stream.write(rec, HEADER_SIZE) && ok;
    else ok = this.stream.write(chunk);
    if (this.stream.state === 'closed') return done(new PortsideError(ErrorCode.CONNECT_FAILED, 'connection closed', Result.STREAM_CLOSED));
    // Set-up messages in the clear are small and already queued in the stream, in order: done at
    // once, even when the session's transport is full (a busy session), so seal() can follow.
    if (ok || !this.sealer) done();
    else this.writeDone = done;
  }

  override _final(done: (err?: Error | null) => void): void {
    if (this.answerLater) this.answerNow();
    this.stream.end();
    done();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    // Closed before both directions ended cleanly: tell the peer (unless carry() took the stream).
    if (!this.retired && this.stream.state !== 'closed') this.stream.reset(Result.CANCELLED);
    const w = this.writeDone;
    this.writeDone = null;
    w?.(err);
    done(err);
  }
}
