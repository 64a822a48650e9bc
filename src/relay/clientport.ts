/**
 * The outside relay's client port (docs/client.md; patent Fig. 6 steps 602-612, [0030], [0034]).
 *
 * A client agent holds one session here (src/session/clientshake.ts: our certificate pinned by its
 * SHA-256 fingerprint, a signed X25519 exchange; then src/session/transport.ts records) and
 * carries each connection as a stream on it (client-connect.req). Each
 * connection has keys of its own (607, claim 7): the agent's X25519 share rides in the request,
 * ours follows the SOCKS5 success reply, and from then on the connection's bytes are sealed
 * records (src/session/seal.ts, src/relay/carried.ts). Before that, in the stream, the agent
 * speaks SOCKS5 with RFC 1929 username/password, and we
 *   - auth: firewall — relay the username/password and then the CONNECT to the firewall (603-605),
 *     hold its "established" and close that connection (606), or
 *   - auth: users — check the password against our users file;
 * then send inside-connect.req to the inside relay that reaches the destination (608) and only
 * after inside-connect.rsp OK answer the agent's CONNECT with success (611-612). In early mode
 * (the session's early secret, from its handshake) the SOCKS5 messages ride in the request and the agent's first
 * bytes, sealed under the early key, follow at once; we pass them on once the password has been
 * judged (docs/protocol.md, "Early data").
 */
import net from 'node:net';
import tls from 'node:tls';
import { Readable } from 'node:stream';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { joinHostPort, splitHostPort, type OutsideConfig } from '../config.js';
import { ConfigError, ErrorCode, PortsideError, Result, resultName } from '../errors.js';
import { Fields, type Logger } from '../log.js';
import { metrics } from '../metrics.js';
import type { InitData } from '../session/init.js';
import { matchAny, parseDestPattern, type DestPattern } from '../agent/match.js';
import { BACK_OFFER_LEN, ByteReader, CMD_CONNECT_BACK, Rep, clientAuth, clientAuthConnect, decodeBackOffer, encodeAddr, readGreeting, readRequest, readUserPass, reply, withTimeout, type BackOffer } from '../agent/socks.js';
import { UserFile } from '../agent/users.js';
import { certFingerprint } from '../agent/cert.js';
import { FrameType, type Frame } from '../session/frame.js';
import { EARLY_MODE, SHARE_SIZE, type KeyShare } from '../session/seal.js';
import type { Session } from '../session/session.js';
import type { Stream } from '../session/stream.js';
import { CarriedConnection, takeKeyShare } from './carried.js';
import { sessionOverSocket } from './link.js';
import { acceptClientSession } from './clientlink.js';
import { MAX_CERT } from '../session/clientshake.js';
import type { ClientSessionKeys } from '../session/clientshake.js';
import type { InsidePeer, OutsideRelay } from './outside.js';
import { Settling, type Drainable } from './drain.js';
import { holdStream, joinSockets } from './pipe.js';
import { AddressRate, Refusals } from './ratelimit.js';

export type ClientsConfig = NonNullable<OutsideConfig['clients']>;

/** RFC 1929 status values we send (any non-zero is a failure; the value tells the agent why). */
export const AuthStatus = {
  OK: 0x00,
  /** Our users file refused the name or password. */
  REFUSED: 0x01,
  /** The firewall refused the name or password. */
  FIREWALL_REFUSED: 0x02,
  /** This agent session had clients.max_auth_failures refused passwords: no more are judged on it. */
  LOCKED: 0x03,
  /** The firewall that should judge the password could not be reached. */
  FIREWALL_UNREACHABLE: 0x0b,
} as const;

/** Wire result of inside-connect.rsp → SOCKS5 reply. */
export function repForResult(r: number): number {
  switch (r) {
    case Result.NOT_ALLOWED: case Result.REFUSED_BY_RULE: return Rep.NOT_ALLOWED;
    case Result.NETWORK_UNREACHABLE: return Rep.NETWORK_UNREACHABLE;
    case Result.HOST_UNREACHABLE: case Result.HOST_NOT_FOUND: return Rep.HOST_UNREACHABLE;
    case Result.CONNECTION_REFUSED: return Rep.CONNECTION_REFUSED;
    case Result.TIMEOUT: return Rep.TTL_EXPIRED;
    default: return Rep.GENERAL_FAILURE;
  }
}

interface PassiveWait { agent: string; user: string; local: string; timer: NodeJS.Timeout }

/** How often the users file's time stamp is checked (see start()). */
const USERS_POLL_MS = 1000;

export class ClientPort implements Drainable {
  private server: net.Server | null = null;
  private readonly users: UserFile | null;
  private readonly destinations: DestPattern[] | null;
  private readonly firewall: { host: string; port: number } | null;
  private readonly cert: Buffer;
  private readonly key: Buffer;
  readonly fingerprint: string;
  /** Passive data listeners opened for agents' control connections, by port. */
  private readonly passive = new Map<number, PassiveWait>();
  private readonly sockets = new Set<net.Socket>();
  private readonly sessions = new Set<Session>();
  /** Draining (quiesce()). */
  private quiet = false;
  /** Agent sessions pinged at quiesce() and not answered yet (drain.ts). */
  private readonly settling = new Settling();
  /** Handshakes per agent address: anyone who reaches the port may start one. */
  private readonly handshakes: AddressRate;
  private readonly refusals = new Refusals();
  /** Refused passwords per agent session (authFailed()). */
  private readonly authFailures = new WeakMap<Session, number>();
  /** Each agent session's early secret (from its handshake), for early records. */
  private readonly earlySecrets = new WeakMap<Session, Buffer>();
  private readonly log: Logger;

  constructor(private readonly relay: OutsideRelay, readonly cfg: ClientsConfig, baseDir: string, log: Logger) {
    this.log = log.child({ part: 'clients' });
    const read = (f: string, what: string) => {
      try {
        return readFileSync(resolve(baseDir, f));
      } catch (err) {
        throw new ConfigError(`clients.${what}: cannot read ${resolve(baseDir, f)}: ${(err as Error).message}`);
      }
    };
    this.cert = read(cfg.cert_file, 'cert_file');
    this.key = read(cfg.key_file, 'key_file');
    this.fingerprint = certFingerprint(this.cert.toString('utf8'));
    this.users = cfg.auth === 'users' ? new UserFile(resolve(baseDir, cfg.users_file!), read(cfg.users_file!, 'users_file').toString('utf8')) : null;
    this.destinations = cfg.allow.destinations ? cfg.allow.destinations.map(parseDestPattern) : null;
    this.firewall = cfg.auth === 'firewall' ? splitHostPort(cfg.firewall!.socks5) : null;
    this.handshakes = new AddressRate(cfg.handshake_rate, cfg.handshake_burst);
  }

  static forConfig(relay: OutsideRelay, log: Logger): ClientPort | null {
    return relay.cfg.clients ? new ClientPort(relay, relay.cfg.clients, dirname(relay.cfg.file), log) : null;
  }

  async start(): Promise<net.AddressInfo> {
    const { host, port } = splitHostPort(this.cfg.listen);
    let certDer: Buffer;
    let certKey: KeyObject;
    try {
      certDer = new X509Certificate(this.cert).raw;
      certKey = createPrivateKey(this.key);
    } catch (err) {
      throw new ConfigError(`clients.cert_file/key_file: not a certificate and its key: ${(err as Error).message}`);
    }
    // Agents refuse a bigger one (src/session/clientshake.ts): say so now, not at every handshake.
    if (certDer.length > MAX_CERT) throw new ConfigError(`clients.cert_file: the certificate is ${certDer.length} bytes; agents accept at most ${MAX_CERT} (portside keygen --cert makes one of about 400)`);
    const server = net.createServer({ allowHalfOpen: true, noDelay: true });
    this.server = server;
    server.on('connection', (sock: net.Socket) => {
      // Anyone who reaches this port may try: a cap on handshakes per address and on agent
      // sessions (handshaking or not), and refusals logged at most once per address per 10 s.
      const remote = sock.remoteAddress ?? '?';
      const refuse = (reason: string) => {
        sock.destroy();
        const n = this.refusals.note(remote);
        if (n) this.log.warn({ event: 'client.rejected', code: ErrorCode.LIMIT, remote, refused: n, reason }, 'agent sessions refused');
      };
      if (!this.handshakes.take(remote)) return refuse(`more than clients.handshake_rate (${this.cfg.handshake_rate}/s, burst ${this.cfg.handshake_burst}) from this address`);
      if (this.sockets.size >= this.cfg.max_sessions) return refuse(`clients.max_sessions (${this.cfg.max_sessions}) reached`);
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
      acceptClientSession(sock, certDer, certKey, this.cfg.handshake_timeout_ms).then(
        (keys) => this.onSession(sock, keys),
        (err: PortsideError) => {
          this.log.warn({ event: 'client.rejected', code: err.code ?? ErrorCode.SESSION_AUTH, remote: sock.remoteAddress, reason: err.message }, 'agent session handshake failed');
          sock.destroy();
        },
      );
    });
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(port, host, () => { server.off('error', rej); res(); });
    });
    // `portside passwd` edits the users file: take the change without a restart (sessions stay).
    if (this.users) watchFile(this.users.file, { interval: USERS_POLL_MS, persistent: false }, this.onUsersFile);
    const a = server.address() as net.AddressInfo;
    this.log.info({ event: 'clients.listening', address: a.address, port: a.port, auth: this.cfg.auth, fingerprint: this.fingerprint }, 'client port listening');
    return a;
  }

  private readonly onUsersFile = (cur: Stats, prev: Stats): void => {
    if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size && cur.ino === prev.ino) return;
    try {
      this.users!.reload();
      this.log.info({ event: 'client.users_reloaded', file: this.users!.file, users: this.users!.size }, 'users file read again');
    } catch (err) {
      // Half written, removed or broken: the users as they were go on being checked.
      this.log.warn({ event: 'client.users_reload_failed', code: ErrorCode.CONFIG, reason: (err as Error).message }, 'users file not taken: the previous users stay');
    }
  };

  /** Graceful stop (drain.ts): no new agent sessions; agents are told (DRAINING) to open nothing more on theirs. */
  quiesce(): void {
    this.quiet = true;
    this.server?.close();
    // Agents open nothing more here (DRAINING); connections they opened before it reach us after
    // it: they are answered 0x0c (or taken, if passive) before the drain may end.
    for (const s of this.sessions) {
      if (s.established && !s.closed) s.sendControl(FrameType.DRAINING, 0);
      this.settling.start(s);
    }
  }

  /** Connections open on every agent session. */
  get active(): number {
    let n = this.settling.size;
    for (const s of this.sessions) n += s.streamCount;
    return n;
  }

  async stop(): Promise<void> {
    if (this.users) unwatchFile(this.users.file, this.onUsersFile);
    for (const w of this.passive.values()) clearTimeout(w.timer);
    this.passive.clear();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  /**
   * An agent's session: its first frame must be INIT ({"v":1}); then it opens one stream per
   * connection. A protocol violation ends the session (GOAWAY with the code); a bad connection
   * only resets its own stream.
   */
  private onSession(sock: net.Socket, keys: ClientSessionKeys): void {
    const agent = joinHostPort(sock.remoteAddress ?? '?', sock.remotePort ?? 0);
    const log = this.log.child({ agent });
    const limits = this.relay.cfg.limits;
    const session: Session = sessionOverSocket(sock, {
      role: 'client-port',
      maxStreams: this.cfg.max_streams,
      onControl: (f: Frame) => this.onControl(session, f, log),
      onStream: (stream: Stream) => this.onStream(session, sock, stream, log),
      onClose: (err) => {
        this.sessions.delete(session);
        if (err && err.code !== ErrorCode.SESSION_CLOSED) log.warn({ event: 'client.session_closed', code: err.code, reason: err.message }, 'agent session ended');
        else log.debug({ event: 'client.session_closed' }, 'agent session ended');
        sock.destroy();
      },
    }, { intervalMs: limits.keepalive_interval_ms, timeoutMs: limits.keepalive_timeout_ms }, keys);
    this.earlySecrets.set(session, keys.early);
    this.sessions.add(session);
    sock.resume();
    // INIT must come within the handshake deadline, like the handshake itself.
    const timer = setTimeout(() => {
      if (!session.established) {
        log.warn({ event: 'client.rejected', code: ErrorCode.HANDSHAKE_TIMEOUT, reason: 'no INIT' }, 'agent session set-up timed out');
        sock.destroy();
      }
    }, this.cfg.handshake_timeout_ms);
    timer.unref();
    sock.once('close', () => clearTimeout(timer));
  }

  private onControl(session: Session, f: Frame, log: Logger): void {
    if (f.type === FrameType.INIT && f.stream === 0 && !session.established) {
      let v: unknown;
      try {
        v = JSON.parse(f.payload.toString('utf8'));
      } catch {
        v = null;
      }
      if ((v as { v?: unknown } | null)?.v !== 1) {
        log.warn({ event: 'client.rejected', code: ErrorCode.PROTOCOL, reason: 'bad INIT' }, 'agent session refused: unsupported INIT');
        session.goAway(Result.PROTOCOL_ERROR, 'client session INIT must be {"v":1}');
        return;
      }
      session.established = true;
      session.sendControl(FrameType.INIT_ACK, 0, Buffer.from('{"v":1}'));
      log.debug({ event: 'client.session_established' }, 'agent session established');
      return;
    }
    if (f.type === FrameType.PING) return this.settling.answer(session, f); // answers to our keep-alives, or to quiesce()
    log.warn({ event: 'client.rejected', code: ErrorCode.PROTOCOL, frame: f.type }, 'unexpected frame on an agent session');
    session.goAway(Result.PROTOCOL_ERROR, `unexpected frame 0x${f.type.toString(16)} on a client session`);
  }

  /** One connection an agent carries: set it up (SOCKS5 inside the stream) under one deadline. */
  private onStream(session: Session, tlsSock: net.Socket, stream: Stream, log: Logger): void {
    const extra = stream.extra;
    // The agent's key share; in early mode (a 1 after it) its SOCKS5 messages follow, and the
    // stream carries only sealed records (docs/protocol.md, "Early data").
    const early = !!extra && extra.length > SHARE_SIZE + 1 && extra[SHARE_SIZE] === EARLY_MODE && session.established;
    if (!extra || (extra.length !== SHARE_SIZE && !early)) {
      log.warn({ event: 'client.failed', code: ErrorCode.STREAM_AUTH, reason: 'client-connect.req without a 32-byte key share (or early mode before INIT)' }, 'client connection refused');
      session.answer(stream, Result.PROTOCOL_ERROR);
      return;
    }
    const share = extra.subarray(0, SHARE_SIZE);
    const sock = new CarriedConnection(stream, { remoteAddress: tlsSock.remoteAddress, remotePort: tlsSock.remotePort, localAddress: tlsSock.localAddress, localPort: tlsSock.localPort });
    sock.answerLater = () => session.answer(stream, Result.OK);
    const slog = new Fields(log, { cstream: stream.id });
    sock.onfailure = (err) => {
      if (err.code === ErrorCode.STREAM_AUTH) slog.warn({ event: 'client.stream_failed', code: err.code, reason: err.message }, 'client connection reset: bad sealed record');
    };
    sock.on('error', () => {}); // reported through onfailure and the set-up's own errors
    // Everything up to the answer to CONNECT has one deadline: nothing hangs.
    const limit = this.cfg.handshake_timeout_ms + this.relay.cfg.limits.connect_timeout_ms;
    let r: ByteReader;
    let own: KeyShare | undefined;
    if (early) {
      own = takeKeyShare();
      try {
        sock.openEarly(own, share, this.earlySecrets.get(session)!);
      } catch (err) {
        log.warn({ event: 'client.failed', code: ErrorCode.STREAM_AUTH, reason: (err as Error).message }, 'client connection refused');
        session.answer(stream, Result.PROTOCOL_ERROR);
        return;
      }
      r = new ByteReader(Readable.from([extra.subarray(SHARE_SIZE + 1)]));
    } else r = new ByteReader(sock);
    // The agent sends greeting, password and request in one flight and waits for all three
    // answers: hold ours until the last (established() or a refusal's end()), one write not three.
    sock.cork();
    withTimeout(this.negotiate(sock, share, r, slog, own, session), limit, 'client set-up').catch((err: PortsideError) => {
      slog.warn({ event: 'client.failed', code: err.code ?? ErrorCode.PROTOCOL, reason: err.message }, 'client connection failed during set-up');
      sock.destroy();
    });
  }

  /**
   * Tell the agent it is connected, with our key share, and seal the connection from here on.
   * The agent sends nothing in between: bytes already past its request are a protocol error.
   */
  private established(sock: CarriedConnection, r: ByteReader, agentShare: Buffer, own = takeKeyShare()): void {
    if (r.pending) throw new PortsideError(ErrorCode.PROTOCOL, 'agent sent data before the connection was established', Result.PROTOCOL_ERROR);
    sock.write(Buffer.concat([reply(Rep.SUCCEEDED), own.share]));
    sock.uncork(); // the method, status and this reply leave as one frame (see onStream)
    r.release();
    sock.seal(own, agentShare, 'client-port');
  }

  /**
   * A password refused on this session (by our users file or the firewall). After
   * clients.max_auth_failures of them (as sshd's MaxAuthTries: each guess costs a scrypt here or
   * a crypt() at the firewall) the session is locked: new connections on it are refused without
   * judging their password, and those already open go on (a password changed at the firewall
   * must not cut a running transfer).
   */
  private authFailed(session: Session, log: Fields): void {
    const n = (this.authFailures.get(session) ?? 0) + 1;
    this.authFailures.set(session, n);
    if (n !== this.cfg.max_auth_failures) return; // logged once, when it locks
    log.warn({ event: 'client.session_locked', code: ErrorCode.LIMIT, reason: `${n} passwords refused on one session (clients.max_auth_failures)` }, 'agent session locked: its new connections are refused, open ones go on');
  }

  private locked(session: Session): boolean {
    return (this.authFailures.get(session) ?? 0) >= this.cfg.max_auth_failures;
  }

  /** `own`: our key share for this connection, when early mode made it ahead (onStream). */
  private async negotiate(sock: CarriedConnection, agentShare: Buffer, r: ByteReader, log: Fields, own: KeyShare | undefined, session: Session): Promise<void> {
    const methods = await readGreeting(r);
    if (!methods.includes(2)) {
      log.warn({ event: 'client.refused', code: ErrorCode.CLIENT_AUTH, reason: 'agent offered no username/password method' }, 'client refused');
      sock.end(Buffer.of(5, 0xff));
      return;
    }
    sock.write(Buffer.of(5, 2));
    const cred = await readUserPass(r);
    // The agent sends greeting, password and request in one flight (docs/protocol.md): read all
    // three before answering, so the firewall can get its part in one flight too.
    const req = await readRequest(r);
    // portside's CONNECT with a back-connect offer (active-mode dynamic ports, docs/client.md).
    let back: BackOffer | null = null;
    if (req.cmd === CMD_CONNECT_BACK) {
      back = decodeBackOffer(await r.read(BACK_OFFER_LEN));
      req.cmd = 1;
    }
    const target = joinHostPort(req.host, req.port);
    const tlog = log.with({ user: cred.username, target });

    // What the request needs, decided now but told only after the password is judged: a wrong
    // password is refused as such whatever it asked for.
    const wait = this.passive.get(req.port);
    const passive = req.cmd === 1 && !!wait && wait.agent === sock.remoteAddress && wait.user === cred.username;
    let refusal: [rep: number, code: string, reason: string, msg: string] | null = null;
    let peer: InsidePeer | null = null;
    if (req.cmd !== 1) refusal = [Rep.COMMAND_NOT_SUPPORTED, ErrorCode.PROTOCOL, `SOCKS5 command ${req.cmd}`, 'only CONNECT is supported'];
    else if (!passive) {
      // Draining (quiesce()): only data connections of open control connections (passive above)
      // are still taken. The agent then dials a new session for its next connection.
      if (this.quiet) refusal = [Rep.SHUTTING_DOWN, ErrorCode.SHUTTING_DOWN, 'the outside relay is shutting down', 'client connection refused: shutting down'];
      else if (this.destinations && !matchAny(this.destinations, req.host, req.port)) refusal = [Rep.NOT_ALLOWED, ErrorCode.NOT_ALLOWED, 'not in clients.allow.destinations', 'destination forbidden by policy'];
      else if (!(peer = this.peerFor(req.host, req.port))) refusal = [Rep.NETWORK_UNREACHABLE, ErrorCode.NO_ROUTE, 'no inside relay reaches it', 'no inside relay reaches the destination'];
    }

    // 603-605: the firewall judges the password (and, for a CONNECT we will carry, the request,
    // sent in the same flight), or our users file does.
    let firewallRep = 0;
    if (this.locked(session)) {
      tlog.warn({ event: 'client.refused', code: ErrorCode.LIMIT, reason: 'the session is locked after clients.max_auth_failures refused passwords' }, 'client refused');
      sock.end(Buffer.of(1, AuthStatus.LOCKED));
      return;
    }
    if (this.firewall) {
      let fw: net.Socket | null = null;
      try {
        fw = await this.connectFirewall();
        const fr = new ByteReader(fw);
        const asked = refusal || passive ? await clientAuth(fw, fr, cred) : await clientAuthConnect(fw, fr, cred, req.host, req.port);
        // 606: hold the firewall's "established" (or its refusal) and close our connection to it.
        fw.destroy();
        const verdict = typeof asked === 'string' ? asked : asked.verdict;
        if (verdict !== 'ok') {
          tlog.warn({ event: 'client.refused', code: ErrorCode.FIREWALL_AUTH, reason: verdict === 'auth-failed' ? 'the firewall refused the username or password' : 'the firewall offers no username/password method' }, 'firewall refused the client');
          sock.end(Buffer.of(1, AuthStatus.FIREWALL_REFUSED));
          if (verdict === 'auth-failed') this.authFailed(session, tlog);
          return;
        }
        if (typeof asked !== 'string') firewallRep = asked.rep;
      } catch (err) {
        fw?.destroy();
        tlog.warn({ event: 'client.refused', code: ErrorCode.FIREWALL_UNREACHABLE, reason: (err as Error).message }, 'cannot reach the firewall to authenticate the client');
        sock.end(Buffer.of(1, AuthStatus.FIREWALL_UNREACHABLE));
        return;
      }
    } else if (!(await this.users!.verify(cred.username, cred.password))) {
      tlog.warn({ event: 'client.refused', code: ErrorCode.CLIENT_AUTH, reason: 'unknown user or wrong password' }, 'client refused');
      sock.end(Buffer.of(1, AuthStatus.REFUSED));
      this.authFailed(session, tlog);
      return;
    }
    sock.write(Buffer.of(1, AuthStatus.OK));

    const refuse = (rep: number, code: string, reason: string, msg: string) => {
      tlog.warn({ event: 'client.refused', code, rep, reason }, msg);
      sock.end(reply(rep));
    };
    if (refusal) return refuse(...refusal);
    // A passive data connection of this agent's own control connection: attach to our listener.
    if (passive) return this.attachPassive(sock, agentShare, r, req.port, wait!, tlog, own);
    if (firewallRep !== 0) return refuse(Rep.FIREWALL_REFUSED, ErrorCode.FIREWALL_REFUSED, `firewall SOCKS5 reply ${firewallRep}`, 'the firewall refused the destination');
    if (this.firewall) tlog.debug({ event: 'firewall.established' }, 'firewall authenticated the client and connected (held)');
    if (!peer || peer.session.closed) return refuse(Rep.NETWORK_UNREACHABLE, ErrorCode.SESSION_CLOSED, 'session closed', 'inside relay session closed');

    // 608: inside-connect.req. `client` is our own address: passive listeners accept only from it
    // (we attach agents' data connections ourselves). `back`: active-mode notices on this control
    // connection go back to the agent (which connects only to its own machine), so the inside
    // relay skips its bounce check for them; see docs/client.md.
    const svc = this.ruledService(peer, req.host, req.port);
    const agentHost = sock.remoteAddress!;
    const stream = peer.session.open(req.host, req.port, Buffer.from(JSON.stringify({ client: sock.localAddress, agent: agentHost, user: cred.username, ...(svc && back ? { back: true } : {}) })));
    const slog = tlog.with({ inside: peer.name, stream: stream.id });
    if (svc) {
      const local = sock.localAddress!;
      const control = { remoteAddress: local, localAddress: local, once: (ev: string, fn: () => void) => sock.once(ev, fn) } as unknown as net.Socket;
      this.relay.extension.onServiceClient?.(peer, svc, stream, control, {
        // outside-connect.req for this control connection: only to this agent, which connects on.
        dial: back ? (host, port) => this.backConnect(agentHost, back, host, port, slog) : undefined,
        onListen: (port) => {
          const timer = setTimeout(() => this.passive.delete(port), 60_000);
          timer.unref();
          this.passive.set(port, { agent: sock.remoteAddress!, user: cred.username, local, timer });
        },
      });
    }
    // The server may speak first (an FTP banner) in the same read as inside-connect.rsp: keep it.
    const held = holdStream(stream);
    // Early mode: the agent's first bytes follow inside-connect.req at once; the inside relay holds
    // them until it has connected (not for ruled connections: their inspection starts with the answer).
    if (own && !svc) sock.startUp(stream);
    const result = await new Promise<number>((res) => {
      stream.onopen = res;
      sock.once('close', () => {
        stream.reset(Result.CANCELLED);
        res(Result.CANCELLED);
      });
    });
    if (sock.destroyed) {
      slog.debug({ event: 'client.abandoned' }, 'agent ended the connection before the inside relay answered');
      return;
    }
    if (result !== Result.OK) {
      slog.warn({ event: 'client.refused', code: ErrorCode.CONNECT_FAILED, result: resultName(result) }, 'inside relay could not connect to the destination');
      sock.end(reply(repForResult(result)));
      return;
    }
    // 611-612: only now the agent is told it is connected (607: with our key share).
    this.established(sock, r, agentShare, own);
    metrics.connections.inc({ path: 'client' });
    slog.info({ event: 'client.connected', ruled: !!svc }, 'client connected through the session');
    const since = Date.now();
    // The access log's second line: what the connection carried (bytes between agent and server, as the inside relay's stream saw them).
    sock.bridge(stream, (res, m) => slog.info({
      event: 'client.closed', result: resultName(res), ...(res === Result.OK || m === resultName(res) ? {} : { reason: m }),
      bytes_up: stream.sentBytes, bytes_down: stream.receivedBytes, duration_ms: Date.now() - since,
    }, 'client connection closed'), held);
  }

  /**
   * Active mode (619-622) for an agent's control connection: a new TLS connection to the agent's
   * back-connect port (fresh keys, the agent's certificate pinned by the fingerprint it sent inside
   * its own pinned connection), the connection's token and the announced address; the agent
   * answers one byte (a SOCKS5 reply code) once it has connected to the program's listener.
   */
  private backConnect(agentHost: string, back: BackOffer, host: string, port: number, log: Fields): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const fail = (code: string, message: string) => {
        clearTimeout(timer);
        s.destroy();
        log.warn({ event: 'client.back_failed', target: joinHostPort(host, port), reason: message }, 'back-connect to the agent failed');
        reject(Object.assign(new Error(message), { code }));
      };
      const s = tls.connect({ host: agentHost, port: back.port, minVersion: 'TLSv1.3', rejectUnauthorized: false, allowHalfOpen: true, noDelay: true } as tls.ConnectionOptions);
      const timer = setTimeout(() => fail('ETIMEDOUT', 'agent back-connect timed out'), this.relay.cfg.limits.connect_timeout_ms);
      s.once('error', (e: NodeJS.ErrnoException) => fail(e.code ?? 'ECONNREFUSED', e.message));
      s.once('secureConnect', () => {
        const cert = s.getPeerCertificate();
        if (!cert?.raw || certFingerprint(cert.raw) !== back.fingerprint) return fail('EACCES', 'agent back-connect certificate is not the one it offered');
        s.write(Buffer.concat([back.token, encodeAddr(host, port)]));
        const r = new ByteReader(s);
        r.read(1).then(([rep]) => {
          if (rep !== Rep.SUCCEEDED) return fail(rep === Rep.NOT_ALLOWED ? 'EACCES' : 'ECONNREFUSED', `agent refused the back-connect (reply ${rep})`);
          clearTimeout(timer);
          s.removeAllListeners('error');
          r.release();
          // A TLS socket cannot send a TCP reset (Node throws); pipeStream resets close it instead.
          s.resetAndDestroy = () => s.destroy();
          resolve(s);
        }, (e: Error) => fail('ECONNRESET', e.message));
      });
    });
  }

  private connectFirewall(): Promise<net.Socket> {
    const { host, port } = this.firewall!;
    return new Promise((res, rej) => {
      const s = net.connect({ host, port, noDelay: true });
      const t = setTimeout(() => { s.destroy(); rej(new PortsideError(ErrorCode.TIMEOUT, `firewall ${host}:${port} did not answer`, Result.TIMEOUT)); }, this.relay.cfg.limits.connect_timeout_ms);
      s.once('connect', () => { clearTimeout(t); res(s); });
      s.once('error', (e) => { clearTimeout(t); rej(new PortsideError(ErrorCode.FIREWALL_UNREACHABLE, `firewall ${host}:${port}: ${e.message}`, Result.NETWORK_UNREACHABLE)); });
    });
  }

  /** The inside relay that reaches host:port: one with a service for it, else one whose `reach` covers it. */
  private peerFor(host: string, port: number): InsidePeer | null {
    let reach: InsidePeer | null = null;
    for (const p of this.relay.peers.values()) {
      if (!p.session.established || p.session.closed || p.draining) continue;
      if (p.init.services.some((s) => s.target.host === host && s.target.port === port)) return p;
      if (!reach && p.init.reach && matchAny(reachPatterns(p.init), host, port)) reach = p;
    }
    return reach;
  }

  /** A service with rules for this destination: configured for it, or a rules file whose initial port it is. */
  private ruledService(peer: InsidePeer, host: string, port: number): InitData['services'][number] | null {
    const svc = peer.init.services.find((s) => s.target.host === host && s.target.port === port);
    if (svc) return svc.rules ? svc : null;
    for (const [name, spec] of Object.entries(peer.init.rules)) {
      const p = (spec as { service?: { port?: number } })?.service?.port;
      if (p === port) return { name: `reach:${name}`, listen: { host: '', port: 0 }, target: { host, port }, rules: name };
    }
    return null;
  }

  private attachPassive(sock: CarriedConnection, agentShare: Buffer, r: ByteReader, port: number, wait: PassiveWait, log: Fields, own?: KeyShare): void {
    this.passive.delete(port);
    clearTimeout(wait.timer);
    const hop = net.connect({ host: wait.local, port, localAddress: wait.local, noDelay: true, allowHalfOpen: true });
    const t = setTimeout(() => hop.destroy(new Error('timed out')), this.relay.cfg.limits.connect_timeout_ms);
    hop.once('error', (e) => {
      clearTimeout(t);
      log.warn({ event: 'client.refused', code: ErrorCode.CONNECT_FAILED, reason: e.message }, 'passive data listener gone');
      sock.end(reply(Rep.CONNECTION_REFUSED));
    });
    hop.once('connect', () => {
      clearTimeout(t);
      hop.removeAllListeners('error');
      try {
        this.established(sock, r, agentShare, own);
      } catch (err) {
        log.warn({ event: 'client.failed', code: (err as PortsideError).code, reason: (err as Error).message }, 'client connection failed during set-up');
        hop.destroy();
        sock.destroy();
        return;
      }
      metrics.connections.inc({ path: 'client' });
      log.info({ event: 'client.passive_attached', port }, 'agent attached to a passive data listener');
      joinSockets(sock as unknown as net.Socket, hop);
    });
  }
}

/** A peer's `reach`, parsed once per session (its init data), not on every connection. */
const reachCache = new WeakMap<InitData, DestPattern[]>();
function reachPatterns(init: InitData): DestPattern[] {
  let p = reachCache.get(init);
  if (!p) reachCache.set(init, (p = (init.reach ?? []).map(safePattern).filter((x): x is DestPattern => !!x)));
  return p;
}

function safePattern(s: string): DestPattern | null {
  try {
    return parseDestPattern(s);
  } catch {
    return null;
  }
}

