/**
 * The client session's handshake on a socket (src/session/clientshake.ts is the pure part):
 * the agent dials, the outside relay's client port answers. After it, the socket carries
 * transport records (sessionOverSocket with the keys).
 */
import type { Socket } from 'node:net';
import type { KeyObject } from 'node:crypto';
import { ErrorCode, PortsideError, Result } from '../errors.js';
import { HELLO_SIZE, answerHello, encodeHello, parseHello, readReply, type ClientSessionKeys } from '../session/clientshake.js';
import { newKeyShare } from '../session/seal.js';
import { certFingerprint } from '../agent/cert.js';

/**
 * Read from `sock` until `parse` returns a result (it throws on bad input). The socket is left
 * paused, with whatever came after the handshake put back for the session to read.
 */
function collect<T>(sock: Socket, timeoutMs: number, what: string, parse: (buf: Buffer) => { value: T; used: number } | null): Promise<T> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const done = (err: Error | null, value?: T) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('error', onError);
      sock.off('close', onClose);
      sock.off('end', onClose);
      if (err) reject(err);
      else resolve(value!);
    };
    const onData = (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      let r: { value: T; used: number } | null;
      try {
        r = parse(buf);
      } catch (err) {
        return done(err as Error);
      }
      if (!r) return;
      sock.pause();
      if (r.used < buf.length) sock.unshift(buf.subarray(r.used));
      done(null, r.value);
    };
    const onError = (err: Error) => done(err);
    const onClose = () => done(new PortsideError(ErrorCode.SESSION_CLOSED, `connection closed during the ${what}`, Result.SESSION_CLOSED));
    const timer = setTimeout(() => done(new PortsideError(ErrorCode.HANDSHAKE_TIMEOUT, `no ${what} within ${timeoutMs} ms`, Result.TIMEOUT)), timeoutMs);
    if (sock.destroyed || sock.readableEnded) return onClose();
    sock.on('data', onData);
    sock.on('error', onError);
    sock.on('close', onClose);
    sock.on('end', onClose);
    sock.resume();
  });
}

/** The outside relay's side: read the agent's hello, answer it, return the session's keys. */
export function acceptClientSession(sock: Socket, certDer: Buffer, certKey: KeyObject, timeoutMs: number): Promise<ClientSessionKeys> {
  return collect(sock, timeoutMs, 'client session hello', (buf) => {
    if (!parseHello(buf)) return null;
    const { reply, keys } = answerHello(buf, newKeyShare(), certDer, certKey);
    sock.write(reply);
    return { value: keys, used: HELLO_SIZE };
  });
}

/** The agent's side on a connected socket: hello, then the relay's signed reply, checked against `pinned`. */
export function dialClientSession(sock: Socket, pinned: string, timeoutMs: number): Promise<ClientSessionKeys> {
  const own = newKeyShare();
  const hello = encodeHello(own);
  sock.write(hello);
  return collect(sock, timeoutMs, 'answer from the outside relay', (buf) => {
    const r = readReply(buf, hello, own, pinned, certFingerprint);
    return r && { value: r.keys, used: r.used };
  });
}
