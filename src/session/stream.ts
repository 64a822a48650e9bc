import { Result, resultName } from '../errors.js';
import type { Session } from './session.js';

export type StreamKind = 'inside-connect' | 'outside-connect' | 'client-connect';

/**
 * One carried connection on a session. The Session feeds it; the relay glue reads and writes it.
 *
 * Flow control (credit window, as in yamux): the sender may have at most `sendWindow` bytes
 * in flight; the receiver grants more only as its consumer reports bytes delivered
 * (`consumed`). So a stalled reader stalls only its own stream, and memory held for a
 * stream is bounded by its window.
 */
export class Stream {
  /** Remote peer opened it and we have not answered yet / we opened it and wait for the answer. */
  state: 'opening' | 'open' | 'closed' = 'opening';
  sendWindow: number;
  recvWindow: number;
  /** Bytes delivered to our consumer, not yet granted back to the sender. */
  private ungranted = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private finQueued = false;
  localEnded = false;
  remoteEnded = false;
  /**
   * We opened this stream. The opener may send data (and FIN) before the answer arrives,
   * within the window: it saves a round trip for protocols where the client speaks first.
   * The answering side holds that data until its connection exists.
   */
  local = false;

  /** May data flow from us now? */
  get sendable(): boolean {
    return this.state === 'open' || (this.state === 'opening' && this.local);
  }

  /** May the peer send data to us now? */
  get receivable(): boolean {
    return this.state === 'open' || (this.state === 'opening' && !this.local);
  }

  /** Bytes after the address in the open request (e.g. the data connection's expected peer). */
  extra: Buffer | undefined;
  /** Set once the stream ended; `result` says how. */
  result: number = Result.OK;

  /**
   * `clear`: the bytes came outside the session transport's sealing (a client session's
   * pre-sealed DATA, src/session/transport.ts): only a sealed connection may take them.
   */
  ondata: ((buf: Buffer, clear?: boolean) => void) | null = null;
  /** Our consumer checks clear bytes itself (a carried connection opens them as sealed records). */
  acceptsClear = false;
  /** DATA bytes handed to the session so far. */
  sentBytes = 0;
  /** DATA bytes the peer sent us so far. */
  receivedBytes = 0;
  /** From this many DATA bytes on, what we send is already sealed (see sealFromHere()). */
  sealedFrom = Infinity;
  onend: (() => void) | null = null;
  /** The peer (or the session's end) reset the stream. */
  onreset: ((result: number, message: string) => void) | null = null;
  /** The window reopened after write() returned false. */
  ondrain: (() => void) | null = null;
  /** The stream is done, cleanly (OK, both FINs) or not; called last, once. */
  onclose: ((result: number) => void) | null = null;
  /** For the opener: the peer's answer. */
  onopen: ((result: number) => void) | null = null;

  constructor(
    readonly session: Session,
    readonly id: number,
    readonly kind: StreamKind,
    readonly host: string,
    readonly port: number,
    window: number,
  ) {
    this.sendWindow = window;
    this.recvWindow = window;
  }

  /**
   * Queue application data. Returns false when the caller should stop reading its source until ondrain.
   * `headroom`: bytes in front of buf that are the caller's and free (at least the frame header
   * size lets the session send header and data as one buffer).
   */
  write(buf: Buffer, headroom = 0): boolean {
    if (this.state === 'closed' || this.localEnded) return false;
    if (this.pendingBytes > 0 || !this.sendable || this.sendWindow === 0) {
      this.pending.push(buf);
      this.pendingBytes += buf.length;
      return false;
    }
    const rest = this.session._sendData(this, buf, headroom);
    if (rest) {
      this.pending.push(rest);
      this.pendingBytes += rest.length;
      return false;
    }
    if (!this.session.blocked) return true;
    this.session._waitForTransport(this);
    return false;
  }

  /**
   * Queue one record given as pieces (Sealer.sealv()): one DATA frame with the pieces as its
   * payload when the window takes it whole, so nothing is gathered; otherwise joined and queued as
   * write() would. Returns as write() does.
   */
  writev(pieces: Buffer[]): boolean {
    let total = 0;
    for (const p of pieces) total += p.length;
    if (this.state === 'closed' || this.localEnded) return false;
    if (this.pendingBytes > 0 || !this.sendable || this.sendWindow < total || total > this.session.maxFrame
      || (this.sealedFrom !== Infinity && this.sentBytes < this.sealedFrom)) return this.write(Buffer.concat(pieces, total));
    this.session._sendPieces(this, pieces, total);
    if (!this.session.blocked) return true;
    this.session._waitForTransport(this);
    return false;
  }

  /** Half-close: no more data from us; the peer still may send. */
  end(): void {
    if (this.state === 'closed' || this.localEnded || this.finQueued) return;
    this.finQueued = true;
    if (this.pendingBytes === 0 && this.sendable) this.sendFin();
  }

  /** Abort the stream in both directions, telling the peer why. */
  reset(result: number = Result.CANCELLED): void {
    if (this.state === 'closed') return;
    this.session._sendReset(this, result);
    this.close(result);
  }

  /** Our consumer delivered n bytes: grant the sender as much new window. */
  consumed(n: number): void {
    if (this.state === 'closed' || this.remoteEnded) return;
    this.ungranted += n;
    // Batch grants: one WINDOW_UPDATE per quarter window keeps control traffic small.
    if (this.ungranted >= this.session.windowSize >>> 2) {
      this.recvWindow += this.ungranted;
      this.session._sendWindowUpdate(this, this.ungranted);
      this.ungranted = 0;
    }
  }

  /**
   * Everything written from now on is sealed by the caller (a carried connection's records): on a
   * session with `clearData` it travels outside the transport's sealing. Bytes already queued do not.
   */
  sealFromHere(): void {
    if (this.sealedFrom === Infinity) this.sealedFrom = this.sentBytes + this.pendingBytes;
  }

  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  // ---- called by Session ----

  /** @internal */ _opened(result: number): void {
    if (result === Result.OK) {
      this.state = 'open';
      this.onopen?.(result);
      this._flush();
    } else {
      this.close(result);
    }
  }

  /** @internal */ _grant(n: number): void {
    this.sendWindow += n;
    this._flush();
  }

  /** @internal send what the window and transport allow from the pending queue. */
  _flush(): void {
    if (!this.sendable) return;
    while (this.pendingBytes > 0 && this.sendWindow > 0) {
      const head = this.pending[0];
      const rest = this.session._sendData(this, head);
      if (rest) {
        this.pendingBytes -= head.length - rest.length;
        this.pending[0] = rest;
        break;
      }
      this.pending.shift();
      this.pendingBytes -= head.length;
    }
    if (this.pendingBytes === 0) {
      if (this.finQueued && !this.localEnded) this.sendFin();
      else if (!this.session.blocked) this.ondrain?.();
      else this.session._waitForTransport(this);
    }
  }

  private sendFin(): void {
    this.localEnded = true;
    this.session._sendFin(this);
    if (this.remoteEnded) this.close(Result.OK);
  }

  /** @internal */ _remoteEnd(): void {
    this.remoteEnded = true;
    this.onend?.();
    if (this.localEnded) this.close(Result.OK);
  }

  /** @internal */ close(result: number, message?: string): void {
    if (this.state === 'closed') return;
    const wasOpening = this.state === 'opening';
    this.state = 'closed';
    this.result = result;
    this.pending = [];
    this.pendingBytes = 0;
    this.session._forget(this);
    if (result !== Result.OK) {
      if (wasOpening && this.onopen) this.onopen(result);
      else this.onreset?.(result, message ?? resultName(result));
    }
    this.onclose?.(result);
  }
}
