import type { Socket } from 'node:net';
import { Result, resultFromSocketError } from '../errors.js';
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
  onDone?: (result: number, message: string) => void,
  held?: HeldData,
  /** Inspect socket→stream bytes (the outside relay's own notice check); returns what to send. */
  filter?: { data(buf: Buffer): Buffer[]; end(): Buffer[] },
): void {
  let ungranted = 0;
  let done = false;
  const finish = (result: number, message: string) => {
    if (done) return;
    done = true;
    onDone?.(result, message);
  };
  sock.setNoDelay(true);
  setWriteHighWaterMark(sock, 256 * 1024);

  sock.on('data', filter
    ? (buf: Buffer) => {
      let ok = true;
      for (const part of filter.data(buf)) ok = stream.write(part);
      if (!ok) sock.pause();
    }
    : (buf: Buffer) => {
      if (!stream.write(buf)) sock.pause();
    });
  stream.ondrain = () => sock.resume();
  let sawEnd = false;
  sock.on('end', () => {
    sawEnd = true;
    if (filter) for (const part of filter.end()) stream.write(part);
    stream.end();
  });

  // The session delivers 16 KiB TLS records one by one; corking until the end of this
  // event-loop turn turns a burst of them into one writev instead of a syscall each.
  let corked = false;
  const uncork = () => {
    corked = false;
    sock.uncork();
  };
  stream.ondata = (buf) => {
    // Small pieces to an idle socket go at once (latency); bulk is batched per loop turn.
    if (!corked && (buf.length >= 4096 || sock.writableLength > 0)) {
      corked = true;
      sock.cork();
      setImmediate(uncork);
    }
    if (sock.write(buf)) stream.consumed(buf.length);
    else ungranted += buf.length;
  };
  sock.on('drain', () => {
    if (ungranted) {
      const n = ungranted;
      ungranted = 0;
      stream.consumed(n);
    }
  });
  stream.onend = () => sock.end();
  stream.onreset = (result, message) => {
    finish(result, message);
    if (!sock.destroyed) sock.resetAndDestroy();
  };

  sock.on('error', (err) => {
    stream.reset(resultFromSocketError(err as NodeJS.ErrnoException));
    finish(resultFromSocketError(err as NodeJS.ErrnoException), (err as Error).message);
  });
  sock.on('close', () => {
    // Both halves ended cleanly: our FIN may still wait behind window-held data; let it go out.
    if (sawEnd && stream.remoteEnded) finish(Result.OK, 'closed');
    else if (stream.state !== 'closed') {
      // The socket went away before both directions finished: tell the peer.
      stream.reset(Result.CANCELLED);
      finish(Result.CANCELLED, 'connection closed before both directions ended');
    } else finish(stream.result, 'closed');
  });
  if (held) {
    // pipeStream has replaced the holding handlers; replay what arrived before.
    for (const b of held.bufs) stream.ondata(b);
    if (held.ended) sock.end();
  }
  if (sock.isPaused()) sock.resume();
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
