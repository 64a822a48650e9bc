import type { Socket } from 'node:net';
import { ErrorCode, PortsideError, Result } from '../errors.js';
import { Session, type SessionOptions } from '../session/session.js';

const COALESCE = 64 * 1024;
const SESSION_HWM = 1024 * 1024;
const EAGER_BYTES = 4096;

/** Raise a socket's write buffer threshold; the bound on memory stays (credit windows). */
export function setWriteHighWaterMark(socket: Socket, bytes: number): void {
  const state = (socket as unknown as { _writableState?: { highWaterMark: number } })._writableState;
  if (state) state.highWaterMark = bytes;
}

/**
 * Glue a Session onto a transport socket: bytes in to parse(), batched frames out,
 * transport backpressure to the streams, keep-alive pings.
 */
export function sessionOverSocket(
  socket: Socket,
  opts: Omit<SessionOptions, 'onWrite'>,
  keepalive: { intervalMs: number; timeoutMs: number },
): Session {
  const session = new Session({
    // Small output on an idle transport goes at once (latency: ping-pong, connection set-up);
    // bulk waits for the end of the loop turn so frames from many reads share one TLS write.
    schedule: (fn, bytes) => (bytes < EAGER_BYTES && socket.writableLength === 0 ? queueMicrotask(fn) : setImmediate(fn)),
    ...opts,
    onWrite(chunks) {
      if (socket.destroyed) return;
      let ok: boolean;
      if (chunks.length === 1) ok = socket.write(chunks[0]);
      else {
        // Small frames go out as one write (one TLS record, one syscall); big ones uncopied.
        let total = 0;
        for (const c of chunks) total += c.length;
        if (total <= COALESCE) ok = socket.write(Buffer.concat(chunks, total));
        else {
          socket.cork();
          ok = true;
          for (const c of chunks) ok = socket.write(c);
          socket.uncork();
        }
      }
      if (!ok) session.setBlocked(true);
    },
  });
  // Node's default 16 KiB high-water mark would report backpressure after every frame,
  // pausing and resuming every stream's source each time (two epoll_ctl per frame).
  setWriteHighWaterMark(socket, SESSION_HWM);
  session.lastReceived = Date.now();
  socket.on('data', (chunk: Buffer) => {
    session.lastReceived = Date.now();
    session.parse(chunk);
  });
  socket.on('drain', () => session.setBlocked(false));
  const timer = setInterval(() => {
    if (Date.now() - session.lastReceived > keepalive.timeoutMs) {
      session.close(new PortsideError(ErrorCode.KEEPALIVE_TIMEOUT, `no frame from the peer for ${keepalive.timeoutMs} ms`, Result.TIMEOUT));
      socket.destroy();
    } else session.ping();
  }, keepalive.intervalMs);
  timer.unref();
  socket.on('error', () => {}); // reported through 'close'
  socket.on('close', () => {
    clearInterval(timer);
    session.close(new PortsideError(ErrorCode.SESSION_CLOSED, 'transport closed', Result.SESSION_CLOSED));
  });
  return session;
}
