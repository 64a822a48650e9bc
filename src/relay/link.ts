import type { Socket } from 'node:net';
import { ErrorCode, PortsideError, Result } from '../errors.js';
import { Session, type SessionOptions } from '../session/session.js';

const COALESCE = 64 * 1024;

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
