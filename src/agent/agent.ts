/**
 * The client agent (`portside client`, docs/client.md): local forwards and a local SOCKS5 server
 * for programs on the client computer (the LD_PRELOAD hook of `portside run` talks to that
 * SOCKS5 server too). Per destination (claim 12) a connection goes
 *   portside — a new TLS 1.3 connection to the outside relay's client port (fresh ephemeral keys
 *              for this connection alone, 607), the outside relay's certificate pinned by SHA-256,
 *              then SOCKS5 with our username/password inside it;
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
import { ErrorCode, PortsideError, Result, type ErrorCodeName } from '../errors.js';
import type { Logger } from '../log.js';
import { dial } from '../relay/firewall.js';
import { joinSockets } from '../relay/pipe.js';
import type { ClientConfig } from './config.js';
import { isLocalAddress, routeFor, type Via } from './match.js';
import { ByteReader, CMD_CONNECT_BACK, Rep, encodeAddr, encodeBackOffer, readAddr, readGreeting, readRequest, reply, userPassMessage, withTimeout } from './socks.js';
import { certFingerprint, makeSelfSignedCert } from './cert.js';

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
    case 0x0b: return new AgentError(ErrorCode.FIREWALL_UNREACHABLE, 'the outside relay cannot reach the firewall to check our password', Rep.GENERAL_FAILURE);
    default: return new AgentError(ErrorCode.CLIENT_AUTH, `the outside relay refused user '${user}' (wrong username or password)`, Rep.NOT_ALLOWED);
  }
}

/** Outside relay's SOCKS5 reply → our error (and what the local program is told). */
function connectError(rep: number, target: string): AgentError {
  switch (rep) {
    case Rep.NOT_ALLOWED: return new AgentError(ErrorCode.NOT_ALLOWED, `destination ${target} is forbidden by the outside relay's policy`, Rep.NOT_ALLOWED);
    case Rep.FIREWALL_REFUSED: return new AgentError(ErrorCode.FIREWALL_REFUSED, `the firewall refused the connection to ${target}`, Rep.NOT_ALLOWED);
    case Rep.NETWORK_UNREACHABLE: return new AgentError(ErrorCode.NO_ROUTE, `no inside relay reaches ${target}`, Rep.NETWORK_UNREACHABLE);
    default: return new AgentError(ErrorCode.CONNECT_FAILED, `the inside relay could not connect to ${target} (SOCKS5 reply ${rep})`, rep >= 1 && rep <= 8 ? rep : Rep.GENERAL_FAILURE);
  }
}

/** Warm connections kept ready, and how long one may wait (well inside the client port's set-up deadline). */
const WARM_POOL = 2;
const WARM_MAX_AGE_MS = 5_000;

function fingerprintOf(sock: tls.TLSSocket): string {
  const cert = sock.getPeerX509Certificate();
  return cert ? certFingerprint(cert.raw) : '';
}

export class ClientAgent {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly outside: { host: string; port: number };
  /** One context for all connections: building it per connection costs more than the handshake's crypto. */
  private readonly tlsContext = tls.createSecureContext({ minVersion: 'TLSv1.3' });
  /** Pre-connected, pinned, unused connections to the client port (see takeOutside). */
  private readonly warm: Array<{ sock: tls.TLSSocket; born: number; timer: NodeJS.Timeout; drop: () => void }> = [];
  private warming = 0;
  private stopped = false;

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
      out.socks5 = a;
    }
    for (const f of this.cfg.forwards) {
      const to = splitHostPort(f.to);
      const a = await this.listen(f.listen, (s) => this.onForwardClient(s, to.host, to.port));
      this.log.info({ event: 'agent.forward_listening', address: a.address, port: a.port, to: f.to, via: routeFor(this.cfg.routes, to.host, to.port) }, 'forward listening');
      out.forwards.push(a);
    }
    this.log.info({ event: 'agent.ready', outside: this.cfg.outside }, 'client agent ready');
    return out;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.warm.splice(0)) { clearTimeout(w.timer); w.sock.destroy(); }
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

  /** A TLS connection of its own to the outside relay, certificate pinned (exported for tests). */
  connectOutside(): Promise<tls.TLSSocket> {
    const { host, port } = this.outside;
    const where = joinHostPort(host, port);
    return new Promise((resolve, reject) => {
      const sock = tls.connect({
        host,
        port,
        minVersion: 'TLSv1.3',
        secureContext: this.tlsContext,
        // The certificate is self-signed: we pin its fingerprint below instead of trusting a CA.
        rejectUnauthorized: false,
        ...(net.isIP(host) ? {} : { servername: host }),
        allowHalfOpen: true,
      } as tls.ConnectionOptions);
      sock.setNoDelay(true);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new AgentError(ErrorCode.OUTSIDE_UNREACHABLE, `outside relay ${where} unreachable: no TLS connection within ${this.cfg.connect_timeout_ms} ms`, Rep.HOST_UNREACHABLE));
      }, this.cfg.connect_timeout_ms);
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(new AgentError(ErrorCode.OUTSIDE_UNREACHABLE, `outside relay ${where} unreachable: ${err.message}`, Rep.HOST_UNREACHABLE));
      });
      sock.once('secureConnect', () => {
        clearTimeout(timer);
        const got = fingerprintOf(sock);
        if (got !== this.cfg.fingerprint) {
          sock.destroy();
          reject(new AgentError(ErrorCode.FINGERPRINT_MISMATCH, `outside relay ${where} presented certificate sha256:${got || '(none)'}, not the pinned outside_fingerprint`, Rep.GENERAL_FAILURE));
          return;
        }
        sock.removeAllListeners('error');
        resolve(sock);
      });
    });
  }

  /**
   * A connection to the client port for one carried connection: a warm one if the pool has it
   * (handshake done ahead, pin checked, never used), else a new one. Either way each carries
   * exactly one connection, so each still has keys of its own. Taking one refills the pool in the
   * background; warm connections unused for WARM_MAX_AGE_MS are closed and not replaced, so an
   * idle agent holds none.
   */
  private takeOutside(): Promise<tls.TLSSocket> {
    let got: tls.TLSSocket | undefined;
    while (!got && this.warm.length) {
      const w = this.warm.shift()!;
      clearTimeout(w.timer);
      w.sock.off('close', w.drop);
      if (!w.sock.destroyed && w.sock.readable && Date.now() - w.born < WARM_MAX_AGE_MS) got = w.sock;
      else w.sock.destroy();
    }
    this.refill();
    return got ? Promise.resolve(got) : this.connectOutside();
  }

  private refill(): void {
    while (this.warm.length + this.warming < WARM_POOL) {
      this.warming++;
      this.connectOutside().then((sock) => {
        this.warming--;
        if (this.stopped) { sock.destroy(); return; }
        const w = {
          sock,
          born: Date.now(),
          drop: () => { const i = this.warm.indexOf(w); if (i >= 0) { this.warm.splice(i, 1); clearTimeout(w.timer); } },
          timer: setTimeout(() => { w.drop(); sock.destroy(); }, WARM_MAX_AGE_MS),
        };
        w.timer.unref();
        sock.on('error', () => {});
        sock.once('close', w.drop);
        this.warm.push(w);
      }, () => { this.warming--; }); // the next real connection reports the failure
    }
  }

  private async openPortside(host: string, port: number): Promise<net.Socket> {
    const sock = await this.takeOutside();
    const target = joinHostPort(host, port);
    const r = new ByteReader(sock);
    // With a back-connect port, every request carries an offer: the outside relay uses it only if
    // this turns out to be a control connection whose notices need a connection back to us.
    let request = Buffer.concat([Buffer.of(5, 1, 0), encodeAddr(host, port)]);
    if (this.back) {
      const token = randomBytes(16);
      const key = token.toString('hex');
      this.backTokens.add(key);
      sock.once('close', () => this.backTokens.delete(key));
      request = Buffer.concat([Buffer.of(5, CMD_CONNECT_BACK, 0), encodeAddr(host, port), encodeBackOffer({ port: this.back.port, token, fingerprint: this.back.fingerprint })]);
    }
    try {
      return await withTimeout((async () => {
        // Greeting, password and request in one flight: the outside relay reads them step by step.
        sock.write(Buffer.concat([Buffer.of(5, 1, 2), userPassMessage(this.cfg.username, this.cfg.password), request]));
        const [v, method] = await r.read(2);
        if (v !== 5 || method !== 2) throw new AgentError(ErrorCode.PROTOCOL, `outside relay answered method ${method}: not a portside client port?`, Rep.GENERAL_FAILURE);
        const [, status] = await r.read(2);
        if (status !== 0) throw authError(status!, this.cfg.username);
        const [, rep] = await r.read(3);
        await readAddr(r);
        if (rep !== 0) throw connectError(rep, target);
        r.release();
        return sock as net.Socket;
      })(), this.cfg.connect_timeout_ms, `connection to ${target} through the outside relay`);
    } catch (err) {
      sock.destroy();
      if (err instanceof AgentError) throw err;
      const e = err as PortsideError;
      if (e.code === ErrorCode.TIMEOUT) throw new AgentError(ErrorCode.TIMEOUT, e.message, Rep.TTL_EXPIRED);
      throw new AgentError(ErrorCode.OUTSIDE_UNREACHABLE, `outside relay ended the connection to ${target}: ${e.message}`, Rep.GENERAL_FAILURE);
    }
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
    joinSockets(a, b);
  }

}
