import type { Socket } from 'node:net';
import { ErrorCode, PortsideError, Result } from '../errors.js';
import { metrics } from '../metrics.js';
import { Session, type SessionOptions } from '../session/session.js';
import { TransportOpener, TransportSealer, type TransportKeys } from '../session/transport.js';
import { type Block, BLOCK_SIZE, READ_SIZE, hookReads, maybeReuse, takeBlock, written } from './pipe.js';

const BIG_WRITE = 16 * 1024;
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
  transport?: TransportKeys,
): Session {
  const sealer = transport ? new TransportSealer(transport.send) : null;
  const session = new Session({
    // Small output on an idle transport goes at once (latency: ping-pong, connection set-up);
    // bulk waits for the end of the loop turn so frames from many reads share one TLS write.
    schedule: (fn, bytes) => (bytes < EAGER_BYTES && socket.writableLength === 0 ? queueMicrotask(fn) : setImmediate(fn)),
    ...opts,
    clearData: !!transport,
    onWrite: sealer ? (chunks, clear) => {
      if (socket.destroyed) return;
      // Our own records on a plain socket: one writev per batch.
      const bufs = sealer.seal(chunks, clear);
      // Sealed into records of their own; clear ones are connections' records, never read blocks.
      for (const c of chunks) if (!clear?.has(c)) written(c);
      let ok = true;
      socket.cork();
      for (const b of bufs) ok = socket.write(b);
      socket.uncork();
      if (!ok) session.setBlocked(true);
    } : (chunks) => {
      if (socket.destroyed) return;
      // Buffers that lie back to back in memory (DATA frames read in place, see relay/pipe.ts)
      // go out as one; big ones are written as they are, runs of small ones joined into one
      // write (one TLS record, one syscall).
      let ok = true;
      let run: Buffer[] = [];
      let runBytes = 0;
      const writeRun = () => {
        if (run.length === 1) {
          const b = run[0];
          ok = socket.write(b, () => written(b));
        } else if (run.length > 1) {
          ok = socket.write(Buffer.concat(run, runBytes));
          for (const b of run) written(b);
        }
        run = [];
        runBytes = 0;
      };
      const put = (b: Buffer) => {
        if (b.length >= BIG_WRITE) {
          writeRun();
          ok = socket.write(b, () => written(b));
        } else {
          run.push(b);
          runBytes += b.length;
          if (runBytes >= BIG_WRITE) writeRun();
        }
      };
      let cur = chunks[0];
      for (let i = 1; i < chunks.length; i++) {
        const c = chunks[i];
        if (c.buffer === cur.buffer && cur.byteOffset + cur.length === c.byteOffset) cur = Buffer.from(cur.buffer, cur.byteOffset, cur.length + c.length);
        else {
          put(cur);
          cur = c;
        }
      }
      put(cur);
      writeRun();
      if (!ok) session.setBlocked(true);
    },
  });
  if (!transport) {
    // Node's TLS socket copies all buffers of a writev into one new buffer before encrypting;
    // written one at a time they are encrypted where they are.
    (socket as unknown as { _writev: unknown })._writev = null;
  }
  // Node's default 16 KiB high-water mark would report backpressure after every frame,
  // pausing and resuming every stream's source each time (two epoll_ctl per frame).
  setWriteHighWaterMark(socket, SESSION_HWM);
  session.lastReceived = Date.now();
  const untrack = metrics.track(session);
  const opener = transport ? new TransportOpener(transport.recv) : null;
  readInPlace(socket, session, opener);
  socket.on('data', (chunk: Buffer) => { // what Node read before readInPlace, or all if it could not hook
    session.lastReceived = Date.now();
    if (opener) openInto(socket, session, opener, chunk);
    else session.parse(chunk);
  });
  socket.on('drain', () => session.setBlocked(false));
  // A session transport never half-closes: the peer's FIN ends the session. (A socket made with
  // allowHalfOpen, e.g. one dialled through a SOCKS5 firewall, would otherwise stay open, idle
  // and unread; with nothing else to wait for, the process would simply exit.)
  socket.on('end', () => socket.destroy());
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
    untrack();
    session.close(new PortsideError(ErrorCode.SESSION_CLOSED, 'transport closed', Result.SESSION_CLOSED));
  });
  return session;
}

/** A session socket's read state (see readInPlace). */
interface InPlace { session: Session; block: Block; at: number; opener: TransportOpener | null; views: number; deliver: (b: Buffer, clear: boolean) => void }

/**
 * Our records in: opened plaintext (buffers of its own) and clear DATA (views into `chunk`) go to
 * the session. A bad record ends the session.
 */
function openInto(socket: Socket, session: Session, opener: TransportOpener, chunk: Buffer, deliver?: (b: Buffer, clear: boolean) => void): void {
  try {
    opener.push(chunk, deliver ?? ((b, clear) => session.parse(b, clear)));
  } catch (err) {
    // Our direction still works: tell the peer why before closing.
    session.fail(err as PortsideError);
    socket.destroySoon();
  }
}
const kInPlace = Symbol('inPlace');
/** A block with less room than this left is retired: a TLS record (16 KiB) fits in one read. */
const MIN_READ = 16 * 1024;

/**
 * Let the TLS socket decrypt records straight into reused blocks, rather than into a new buffer
 * with a 'data' event per 16 KiB record. The session parses them in place: DATA views go to the
 * streams, which report them written (pipe.ts); everything else is done with once parsed.
 */
function readInPlace(socket: Socket, session: Session, opener: TransportOpener | null): void {
  const st: InPlace = {
    session, block: takeBlock(), at: 0, opener, views: 0,
    deliver: (b, clear) => {
      const before = session.delivered;
      session.parse(b, clear);
      if (clear) st.views += session.delivered - before;
    },
  };
  (socket as Socket & { [kInPlace]: InPlace })[kInPlace] = st;
  if (!hookReads(socket, st.block.buf.subarray(0, READ_SIZE), onSessionRead)) st.block.reading = false;
}

function onSessionRead(this: Socket, n: number): Buffer {
  const st = (this as Socket & { [kInPlace]: InPlace })[kInPlace];
  const b = st.block;
  const view = b.buf.subarray(st.at, st.at + n);
  st.at += n;
  b.handed += n;
  if (BLOCK_SIZE - st.at < MIN_READ) {
    b.reading = false;
    st.block = takeBlock();
    st.at = 0;
  }
  const { session } = st;
  session.lastReceived = Date.now();
  if (st.opener) {
    // Only clear DATA is handed on as views of this block; opened records are buffers of their own.
    st.views = 0;
    openInto(this, session, st.opener, view, st.deliver);
    b.taken += n - st.views;
  } else {
    const delivered = session.delivered;
    session.parse(view);
    b.taken += n - (session.delivered - delivered);
  }
  maybeReuse(b);
  return st.block.buf.subarray(st.at, Math.min(BLOCK_SIZE, st.at + READ_SIZE));
}
