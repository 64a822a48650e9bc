/**
 * The client agent (`portside client`, docs/client.md): local forwards and a local SOCKS5 server
 * for programs on the client computer (the LD_PRELOAD hook of `portside run` talks to that
 * SOCKS5 server too). Per destination (claim 12) a connection goes
 *   portside — a stream on our one session to the outside relay's client port (its
 *              certificate pinned by SHA-256, src/session/clientshake.ts): SOCKS5 with our
 *              username/password, then the connection's bytes sealed with keys made for it
 *              alone (607, src/session/seal.ts; on a forward the program's first bytes go at
 *              once, under an early key);
 *   firewall — through the firewall's SOCKS5 directly;
 *   direct   — a plain TCP connection.
 * Every failure is one log line with a distinct code; the local program sees an ordinary
 * connection error (a SOCKS5 failure reply, or a reset on a forward). Every step has a deadline.
 */
import net from 'node:net';
import tls from 'node:tls';
import { networkInterfaces } from 'node:os';
import { randomBytes } from 'node:crypto';
import { joinHostPort, splitHostPort } from '../config.js';
import { ErrorCode, PortsideError, Result, resultName, type ErrorCodeName } from '../errors.js';
import type { Logger } from '../log.js';
import { metrics } from '../metrics.js';
import { dial } from '../relay/firewall.js';
import { CarriedConnection, takeKeyShare } from '../relay/carried.js';
import { dialClientSession } from '../relay/clientlink.js';
import type { ClientSessionKeys } from '../session/clientshake.js';
import { sessionOverSocket } from '../relay/link.js';
import { joinSockets } from '../relay/pipe.js';
import { FrameType } from '../session/frame.js';
import { EARLY_MODE, SHARE_SIZE, deriveEarlyKey } from '../session/seal.js';
import type { Session } from '../session/session.js';
import { isLoopbackListen, type ClientConfig } from './config.js';
import { isLocalAddress, routeFor, type Via } from './match.js';
import { ByteReader, CMD_CONNECT_BACK, Rep, encodeAddr, encodeBackOffer, readAddr, readGreeting, readRequest, reply, userPassMessage, withTimeout } from './socks.js';
import { makeSelfSignedCert } from './cert.js';
import type { Drainable } from '../relay/drain.js';

/** A failure to open a carried connection: the log code, and the SOCKS5 reply for the local program. */
export class AgentError extends PortsideError {
  constructor(code: ErrorCodeName, message: string, readonly rep: number) {
    super(code, message, Result.GENERAL_FAILURE);
  }
}

/** Outside relay's RFC 1929 status (src/relay/clientport.ts AuthStatus) → our error. */
function authError(status: number, user: string): AgentError {
  switch (status) {
    case 0x02: return new AgentError(ErrorCode.FIREWALL_AUTH, `the firewall refused user '${user}' (wrong username or password)`, Rep.NOT_ALLOWED);
    case 0x03: return new AgentError(ErrorCode.LIMIT, 'the outside relay refuses new connections on this session after too many refused passwords (its clients.max_auth_failures): set the right password and restart the agent', Rep.NOT_ALLOWED);
    case 0x0b: return new AgentError(ErrorCode.FIREWALL_UNREACHABLE, 'the outside relay cannot reach the firewall to check our password', Rep.GENERAL_FAILURE);
    default: return new AgentError(ErrorCode.CLIENT_AUTH, `the outside relay refused user '${user}' (wrong username or password)`, Rep.NOT_ALLOWED);
  }
}

/** Outside relay's SOCKS5 reply → our error (and what the local program is told). */
function connectError(rep: number, target: string): AgentError {
  switch (rep) {
    case Rep.NOT_ALLOWED: return new AgentError(ErrorCode.NOT_ALLOWED, `destination ${target} is forbidden by the outside relay's policy`, Rep.NOT_ALLOWED);
    case Rep.FIREWALL_REFUSED: return new AgentError(ErrorCode.FIREWALL_REFUSED, `the firewall refused the connection to ${target}`, Rep.NOT_ALLOWED);
    case Rep.SHUTTING_DOWN: return new AgentError(ErrorCode.SHUTTING_DOWN, `the outside relay is shutting down and took no new connection to ${target} (the next connection dials a new session)`, Rep.GENERAL_FAILURE);
    case Rep.NETWORK_UNREACHABLE: return new AgentError(ErrorCode.NO_ROUTE, `no inside relay reaches ${target}`, Rep.NETWORK_UNREACHABLE);
    default: return new AgentError(ErrorCode.CONNECT_FAILED, `the inside relay could not connect to ${target} (SOCKS5 reply ${rep})`, rep >= 1 && rep <= 8 ? rep : Rep.GENERAL_FAILURE);
  }
}

/** Our session to the client port; `early`: its secret for early records (from the handshake). */
interface ClientSession { session: Session; sock: net.Socket; early: Buffer }

/** Keep-alive on the client session: a dead outside relay is noticed within the timeout. */
const KEEPALIVE = { intervalMs: 15_000, timeoutMs: 45_000 };

export class ClientAgent implements Drainable {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly outside: { host: string; port: number };
  /** Our session to the client port, and its socket; a new one is dialled when it is gone. */
  private session: ClientSession | null = null;
  private dialing: Promise<ClientSession> | null = null;
  /** Sessions whose outside relay is shutting down: their connections go on, new ones take a new session. */
  private readonly retiring = new Set<ClientSession>();

  /** Back-connect (active-mode dynamic ports): our TLS listener, its port and certificate fingerprint. */
  private back: { server: tls.Server; port: number; fingerprint: string } | null = null;
  /** Tokens of the connections we carry through portside (hex → live); a back-connect must name one. */
  private readonly backTokens = new Set<string>();

  constructor(readonly cfg: ClientConfig, readonly log: Logger) {
    this.outside = splitHostPort(cfg.outside);
  }

  async start(): Promise<{ socks5?: net.AddressInfo; forwards: net.AddressInfo[]; back?: net.AddressInfo }> {
    const out: { socks5?: net.AddressInfo; forwards: net.AddressInfo[]; back?: net.AddressInfo } = { forwards: [] };
    if (this.cfg.back_listen !== 'off') {
      out.back = await this.startBack(this.cfg.back_listen);
      this.log.info({ event: 'agent.back_listening', address: out.back.address, port: out.back.port }, 'back-connect port listening (active-mode data connections)');
    }
    if (this.cfg.socks5) {
      const a = await this.listen(this.cfg.socks5, (s) => this.onSocksClient(s));
      this.log.info({ event: 'agent.socks5_listening', address: a.address, port: a.port }, 'local SOCKS5 server listening');
      if (!isLoopbackListen(this.cfg.socks5)) this.log.warn({ event: 'agent.listening_remote', address: a.address, port: a.port }, 'the SOCKS5 server listens beyond this machine (allow_remote): whoever reaches it connects as this agent\'s user');
      out.socks5 = a;
    }
    for (const f of this.cfg.forwards) {
      const to = splitHostPort(f.to);
      const a = await this.listen(f.listen, (s) => this.onForwardClient(s, to.host, to.port));
      this.log.info({ event: 'agent.forward_listening', address: a.address, port: a.port, to: f.to, via: routeFor(this.cfg.routes, to.host, to.port) }, 'forward listening');
      if (!isLoopbackListen(f.listen)) this.log.warn({ event: 'agent.listening_remote', address: a.address, port: a.port }, 'a forward listens beyond this machine (allow_remote): whoever reaches it connects as this agent\'s user');
      out.forwards.push(a);
    }
    this.log.info({ event: 'agent.ready', outside: this.cfg.outside }, 'client agent ready');
    return out;
  }

  /** Graceful stop (drain.ts): the forwards and the SOCKS5 port close; open connections (and their back-connects) go on. */
  quiesce(): void {
    for (const s of this.servers) s.close();
  }

  /** Local connections open (programs' and back-connected). */
  get active(): number {
    return this.sockets.size;
  }

  async stop(): Promise<void> {
    this.session?.sock.destroy();
    this.session = null;
    for (const e of this.retiring) e.sock.destroy();
    for (const s of this.sockets) s.destroy();
    await Promise.all([...this.servers, ...(this.back ? [this.back.server] : [])].map((s) => new Promise<void>((r) => s.close(() => r()))));
  }

  /**
   * Active-mode dynamic ports (patent 619-622): the outside relay, asked by the inside relay to
   * connect to the address a program announced in PORT/EPRT, connects here instead — a new TLS
   * connection (keys of its own), our throw-away certificate pinned by the fingerprint we sent it
   * inside the pinned connection — and sends the connection's token and the announced address.
   * We connect only if the token is one of a connection we carry now and the address is this
   * machine's own (loopback or an interface address): nobody can make us connect elsewhere.
   */
  private async startBack(hp: string): Promise<net.AddressInfo> {
    const c = await makeSelfSignedCert('portside-agent', 2);
    const { host, port } = splitHostPort(hp);
    const server = tls.createServer({ cert: c.cert, key: c.key, minVersion: 'TLSv1.3', allowHalfOpen: true, handshakeTimeout: this.cfg.connect_timeout_ms });
    server.on('connection', (raw: net.Socket) => {
      raw.setNoDelay(true);
      this.sockets.add(raw);
      raw.on('close', () => this.sockets.delete(raw));
    });
    server.on('secureConnection', (s: tls.TLSSocket) => this.onBackConnect(s));
    server.on('tlsClientError', () => {});
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(port, host, () => { server.off('error', rej); res(); });
    });
    const a = server.address() as net.AddressInfo;
    this.back = { server, port: a.port, fingerprint: c.fingerprint };
    return a;
  }

  private onBackConnect(s: tls.TLSSocket): void {
    s.setNoDelay(true);
    s.on('error', () => {});
    const r = new ByteReader(s);
    const from = joinHostPort(s.remoteAddress ?? '?', s.remotePort ?? 0);
    withTimeout((async () => {
      const token = (await r.read(16)).toString('hex');
      const { host, port } = await readAddr(r);
      const target = joinHostPort(host, port);
      const own = Object.values(networkInterfaces()).flatMap((l) => (l ?? []).map((i) => i.address));
      if (!this.backTokens.has(token)) {
        this.log.warn({ event: 'agent.back_refused', code: ErrorCode.NOT_ALLOWED, from, target, reason: 'unknown token' }, 'back-connect refused: not for a connection we carry');
        s.end(Buffer.of(Rep.NOT_ALLOWED));
        return;
      }
      if (!isLocalAddress(host, own)) {
        this.log.warn({ event: 'agent.back_refused', code: ErrorCode.NOT_ALLOWED, from, target, reason: 'not an address of this machine' }, 'back-connect refused: the announced address is not this machine\'s');
        s.end(Buffer.of(Rep.NOT_ALLOWED));
        return;
      }
      const local = await new Promise<net.Socket>((res, rej) => {
        const c = net.connect({ host, port, noDelay: true, allowHalfOpen: true });
        c.once('connect', () => { c.removeAllListeners('error'); res(c); });
        c.once('error', rej);
      }).catch((err: NodeJS.ErrnoException) => {
        this.log.warn({ event: 'agent.back_refused', code: ErrorCode.CONNECT_FAILED, from, target, reason: err.message }, 'back-connect: the program is not listening');
        s.end(Buffer.of(err.code === 'ECONNREFUSED' ? Rep.CONNECTION_REFUSED : Rep.HOST_UNREACHABLE));
        return null;
      });
      if (!local) return;
      s.write(Buffer.of(Rep.SUCCEEDED));
      r.release();
      this.log.info({ event: 'agent.back_connected', from, target }, 'active-mode data connection handed to the program\'s listener');
      this.sockets.add(local);
      local.on('close', () => this.sockets.delete(local));
      this.join(local, s);
    })(), this.cfg.connect_timeout_ms, 'back-connect').catch((err: Error) => {
      this.log.debug({ event: 'agent.back_failed', from, reason: err.message }, 'back-connect failed');
      s.destroy();
    });
  }

  private listen(hp: string, onConn: (s: net.Socket) => void): Promise<net.AddressInfo> {
    const { host, port } = splitHostPort(hp);
    const srv = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => {});
      onConn(s);
    });
    this.servers.push(srv);
    return new Promise((res, rej) => {
      srv.once('error', rej);
      srv.listen(port, host, () => { srv.off('error', rej); res(srv.address() as net.AddressInfo); });
    });
  }

  /** Open a connection to host:port the way the routes say (the socket comes back paused). */
  async open(host: string, port: number): Promise<{ sock: net.Socket; via: Via }> {
    const via = routeFor(this.cfg.routes, host, port);
    const target = joinHostPort(host, port);
    const timeout = this.cfg.connect_timeout_ms;
    if (via === 'portside') return { sock: await this.openPortside(host, port), via };
    try {
      const fw = via === 'firewall' ? { ...splitHostPort(this.cfg.firewall!.socks5), username: this.cfg.firewall!.username, password: this.cfg.firewall!.password } : undefined;
      return { sock: await dial(host, port, fw, timeout), via };
    } catch (err) {
      const e = err as PortsideError;
      const rep = e.code === ErrorCode.FIREWALL_AUTH || e.code === ErrorCode.FIREWALL_REFUSED ? Rep.NOT_ALLOWED : e.result === Result.CONNECTION_REFUSED ? Rep.CONNECTION_REFUSED : Rep.HOST_UNREACHABLE;
      throw new AgentError(e.code ?? ErrorCode.CONNECT_FAILED, `${via} connection to ${target}: ${e.message}`, rep);
    }
  }

  /**
   * A connection of its own to the outside relay's client port, with the session handshake done
   * (its certificate pinned, src/session/clientshake.ts): the socket (paused) and the session's
   * transport keys. Exported for tests.
   */
  async connectOutside(): Promise<{ sock: net.Socket; keys: ClientSessionKeys }> {
    const { host, port } = this.outside;
    const where = joinHostPort(host, port);
    const sock = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
    const deadline = Date.now() + this.cfg.connect_timeout_ms;
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new AgentError(ErrorCode.OUTSIDE_UNREACHABLE, `outside relay ${where} unreachable: no connection within ${this.cfg.connect_timeout_ms} ms`, Rep.HOST_UNREACHABLE)), this.cfg.connect_timeout_ms);
        sock.once('error', (err) => {
          clearTimeout(timer);
          reject(new AgentError(ErrorCode.OUTSIDE_UNREACHABLE, `outside relay ${where} unreachable: ${err.message}`, Rep.HOST_UNREACHABLE));
        });
        sock.once('connect', () => {
          clearTimeout(timer);
          sock.removeAllListeners('error');
          resolve();
        });
      });
      const keys = await dialClientSession(sock, this.cfg.fingerprint, Math.max(1, deadline - Date.now())).catch((err: PortsideError) => {
        if (err.code === ErrorCode.FINGERPRINT_MISMATCH) throw new AgentError(err.code, `outside relay ${where} ${err.message}`, Rep.GENERAL_FAILURE);
        if (err.code === ErrorCode.SESSION_AUTH) throw new AgentError(err.code, `outside relay ${where}: ${err.message}`, Rep.GENERAL_FAILURE);
        // Connected, then closed before answering: full (clients.max_sessions), or not a client port.
        if (err.code === ErrorCode.SESSION_CLOSED) throw new AgentError(ErrorCode.OUTSIDE_UNREACHABLE, `outside relay ${where} closed the connection without answering our handshake (clients.max_sessions reached there, or not a portside client port: \`outside\` must name the outside relay's \`clients.listen\`)`, Rep.HOST_UNREACHABLE);
        throw new AgentError(ErrorCode.OUTSIDE_UNREACHABLE, `outside relay ${where} unreachable: ${err.message}`, Rep.HOST_UNREACHABLE);
      });
      return { sock, keys };
    } catch (err) {
      sock.destroy();
      throw err;
    }
  }

  /**
   * Our session to the client port: one TCP connection carries every connection we send through
   * portside. INIT goes out at once and the first stream may follow it in the same flight.
   */
  private clientSession(): Promise<ClientSession> {
    if (this.session && !this.session.session.closed) return Promise.resolve(this.session);
    this.dialing ??= this.connectOutside().then(({ sock, keys }) => {
      const entry: ClientSession = { sock, session: null as unknown as Session, early: keys.early };
      entry.session = sessionOverSocket(sock, {
        role: 'client',
        // The outside relay is stopping: open nothing more on this session.
        onControl: (f) => { if (f.type === FrameType.DRAINING) this.retire(entry); },
        onClose: (err) => {
          if (this.session === entry) this.session = null;
          this.retiring.delete(entry);
          sock.destroy();
          // Ending is ordinary (the relay went away, we stopped); a broken session is not.
          if (err && err.code !== ErrorCode.SESSION_CLOSED) this.log.warn({ event: 'agent.session_closed', code: err.code, reason: err.message }, 'session to the outside relay ended');
          else this.log.debug({ event: 'agent.session_closed', code: err?.code, reason: err?.message }, 'session to the outside relay ended');
        },
      }, KEEPALIVE, keys);
      sock.resume();
      entry.session.established = true;
      entry.session.sendControl(FrameType.INIT, 0, Buffer.from('{"v":1}'));
      this.session = entry;
      this.log.debug({ event: 'agent.session_established', outside: this.cfg.outside }, 'session to the outside relay established');
      return entry;
    }).finally(() => { this.dialing = null; });
    return this.dialing;
  }

  /** The outside relay is stopping (DRAINING, or a 0x0c reply): this session's connections go on, new ones take a new session. */
  private retire(entry: ClientSession): void {
    if (this.session !== entry) return;
    this.session = null;
    this.retiring.add(entry);
    this.log.info({ event: 'agent.session_retiring', outside: this.cfg.outside }, 'the outside relay is shutting down: its open connections go on, new ones take a new session');
  }

  /** A connection through portside, once the outside relay has answered (and it is sealed). */
  private async openPortside(host: string, port: number): Promise<net.Socket> {
    for (let retried = false; ; retried = true) {
      const { sock, answered } = await this.startPortside(host, port);
      try {
        await answered;
        return sock as unknown as net.Socket;
      } catch (err) {
        // The outside relay is stopping and took nothing of this connection: the program has
        // sent nothing yet (it waits for this answer), so try once more on a new session.
        if (retried || (err as PortsideError).code !== ErrorCode.SHUTTING_DOWN) throw err;
      }
    }
  }

  /**
   * Start a connection through portside: a stream on our session, the SOCKS5 messages, and the
   * answer read in the background (`answered`). The connection is in early mode: the messages
   * ride in client-connect.req and the program's bytes may follow at once, sealed under the early
   * key (docs/protocol.md, "Early data").
   */
  private async startPortside(host: string, port: number): Promise<{ sock: CarriedConnection; answered: Promise<void> }> {
    const entry = await this.clientSession();
    const { session, sock: tlsSock, early: sessionSecret } = entry;
    const target = joinHostPort(host, port);
    // 607: a key exchange for this connection alone; our share rides in the request.
    const own = takeKeyShare();
    // With a back-connect port, every request carries an offer: the outside relay uses it only if
    // this turns out to be a control connection whose notices need a connection back to us.
    let request = Buffer.concat([Buffer.of(5, 1, 0), encodeAddr(host, port)]);
    let token: string | null = null;
    if (this.back) {
      const t = randomBytes(16);
      token = t.toString('hex');
      request = Buffer.concat([Buffer.of(5, CMD_CONNECT_BACK, 0), encodeAddr(host, port), encodeBackOffer({ port: this.back.port, token: t, fingerprint: this.back.fingerprint })]);
    }
    // Greeting, password and request in one flight: the outside relay reads them step by step.
    const messages = Buffer.concat([Buffer.of(5, 1, 2), userPassMessage(this.cfg.username, this.cfg.password), request]);
    let sock: CarriedConnection;
    try {
      const extra = Buffer.concat([own.share, Buffer.of(EARLY_MODE), messages]);
      sock = new CarriedConnection(session.open('0.0.0.0', 0, extra), { remoteAddress: tlsSock.remoteAddress, remotePort: tlsSock.remotePort, localAddress: tlsSock.localAddress, localPort: tlsSock.localPort });
      sock.sealEarly(deriveEarlyKey(sessionSecret, own.share));
    } catch (err) {
      throw new AgentError(ErrorCode.OUTSIDE_UNREACHABLE, `session to the outside relay ended: ${(err as Error).message}`, Rep.GENERAL_FAILURE);
    }
    if (token) {
      const key = token;
      this.backTokens.add(key);
      sock.once('close', () => this.backTokens.delete(key));
    }
    sock.on('error', () => {}); // reported through the set-up below, or by whoever carries it
    sock.onfailure = (err) => {
      if (err.code === ErrorCode.STREAM_AUTH) this.log.warn({ event: 'agent.stream_failed', code: err.code, target, reason: err.message }, 'connection reset: bad sealed record');
    };
    sock.stream.onopen = (result) => {
      if (result !== Result.OK) sock.destroy(new PortsideError(ErrorCode.OUTSIDE_UNREACHABLE, `outside relay refused the stream: ${resultName(result)}`, result));
    };
    const r = new ByteReader(sock);
    const answered = withTimeout((async () => {
      const [v, method] = await r.read(2);
      if (v !== 5 || method !== 2) throw new AgentError(ErrorCode.PROTOCOL, `outside relay answered method ${method}: not a portside client port?`, Rep.GENERAL_FAILURE);
      const [, status] = await r.read(2);
      if (status !== 0) throw authError(status!, this.cfg.username);
      const [, rep] = await r.read(3);
      await readAddr(r);
      if (rep === Rep.SHUTTING_DOWN) this.retire(entry);
      if (rep !== 0) throw connectError(rep, target);
      // The outside relay's key share; whatever follows it is already sealed.
      const share = await r.read(SHARE_SIZE);
      sock.seal(own, share, 'client', r.take());
      metrics.connections.inc({ path: 'agent' });
      this.log.debug({ event: 'agent.sealed', target, stream: sock.stream.id, early: true }, 'connection sealed with its own keys');
    })(), this.cfg.connect_timeout_ms, `connection to ${target} through the outside relay`).catch((err) => {
      sock.destroy();
      if (err instanceof AgentError) throw err;
      const e = err as PortsideError;
      if (e.code === ErrorCode.TIMEOUT) throw new AgentError(ErrorCode.TIMEOUT, e.message, Rep.TTL_EXPIRED);
      if (e.code === ErrorCode.STREAM_AUTH) throw new AgentError(ErrorCode.STREAM_AUTH, `connection to ${target}: ${e.message}`, Rep.GENERAL_FAILURE);
      throw new AgentError(ErrorCode.OUTSIDE_UNREACHABLE, `outside relay ended the connection to ${target}: ${e.message}`, Rep.GENERAL_FAILURE);
    });
    answered.catch(() => {}); // each caller handles it
    return { sock, answered };
  }

  private fail(err: unknown, host: string, port: number, from: string): AgentError {
    const e = err instanceof AgentError ? err : new AgentError(ErrorCode.CONNECT_FAILED, String((err as Error)?.message ?? err), Rep.GENERAL_FAILURE);
    this.log.warn({ event: 'agent.connect_failed', code: e.code, target: joinHostPort(host, port), from, reason: e.message }, e.message);
    return e;
  }

  private onSocksClient(s: net.Socket): void {
    const r = new ByteReader(s);
    s.resume();
    const from = joinHostPort(s.remoteAddress ?? '?', s.remotePort ?? 0);
    withTimeout((async () => {
      const methods = await readGreeting(r);
      if (!methods.includes(0)) { s.end(Buffer.of(5, 0xff)); return; }
      s.write(Buffer.of(5, 0));
      const req = await readRequest(r);
      if (req.cmd !== 1) { s.end(reply(Rep.COMMAND_NOT_SUPPORTED)); return; }
      let up: { sock: net.Socket; via: Via };
      try {
        up = await this.open(req.host, req.port);
      } catch (err) {
        const e = this.fail(err, req.host, req.port, from);
        s.end(reply(e.rep));
        return;
      }
      s.write(reply(Rep.SUCCEEDED));
      r.release();
      this.log.debug({ event: 'agent.connected', target: joinHostPort(req.host, req.port), via: up.via, from }, 'connected');
      this.join(s, up.sock);
    })(), this.cfg.connect_timeout_ms + 5_000, 'local SOCKS5 request').catch((err: Error) => {
      this.log.debug({ event: 'agent.socks_failed', from, reason: err.message }, 'local SOCKS5 client failed');
      s.destroy();
    });
  }

  private onForwardClient(s: net.Socket, host: string, port: number): void {
    const from = joinHostPort(s.remoteAddress ?? '?', s.remotePort ?? 0);
    let gone = false;
    s.once('close', () => { gone = true; });
    const reset = (err: unknown) => {
      if (s.destroyed) {
        // The program went away first (its close ended the set-up): nothing to report.
        this.log.debug({ event: 'agent.connect_abandoned', target: joinHostPort(host, port), from, reason: String((err as Error)?.message ?? err) }, 'program closed before the connection was answered');
        return;
      }
      this.fail(err, host, port, from);
      // An ordinary connection error for the program: a reset, not a silent close.
      if (!s.destroyed) s.resetAndDestroy();
    };
    if (routeFor(this.cfg.routes, host, port) === 'portside') {
      // The program's bytes need not wait for the answer: joined at once (early data); a refusal
      // resets the program's connection.
      this.startPortside(host, port).then(({ sock, answered }) => {
        answered.catch(reset);
        if (gone) { sock.destroy(); return; }
        this.join(s, sock as unknown as net.Socket);
      }).catch(reset);
      return;
    }
    this.open(host, port).then((up) => {
      if (gone) { up.sock.destroy(); return; }
      this.join(s, up.sock);
    }, (err) => {
      this.fail(err, host, port, from);
      // An ordinary connection error for the program: a reset, not a silent close.
      if (!s.destroyed) s.resetAndDestroy();
    });
  }

  private join(a: net.Socket, b: net.Socket): void {
    this.sockets.add(b);
    b.on('close', () => this.sockets.delete(b));
    // A connection through portside: the local socket and the sealed stream, joined directly.
    if (b instanceof CarriedConnection) b.carry(a);
    else joinSockets(a, b);
  }

}
