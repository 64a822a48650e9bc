import net from 'node:net';
import tls from 'node:tls';
import type { OutsideConfig } from '../config.js';
import { joinHostPort } from '../config.js';
import { AuthError, ErrorCode, PortsideError, ProtocolError, Result, resultName } from '../errors.js';
import type { Logger } from '../log.js';
import { metrics } from '../metrics.js';
import { AddressRate, Refusals } from './ratelimit.js';
import { FrameType, type Frame } from '../session/frame.js';
import { NonceLog, OutsideTrial, deriveKeys } from '../session/handshake.js';
import { decodeJson, encodeJson, initSchema, type InitAck, type InitData } from '../session/init.js';
import type { Session } from '../session/session.js';
import type { Stream } from '../session/stream.js';
import { AllowList } from './allow.js';
import { sessionOverSocket } from './link.js';
import type { Drainable } from './drain.js';
import { guardOf, logClosed, pipeStream, type Guard } from './pipe.js';
import { channelBinding, serverOptions } from './tls.js';

/** One inside relay's live session at this outside relay. */
export interface InsidePeer {
  name: string;
  session: Session;
  socket: tls.TLSSocket;
  init: InitData;
  listeners: net.Server[];
  log: Logger;
  /** The inside relay is stopping gracefully (DRAINING): no new streams to it. */
  draining?: boolean;
  /** DRAINING: its service ports wait this long for a successor session to take them over. */
  handover?: NodeJS.Timeout;
  /** Service clients held: until INIT_ACK has gone out, or, while draining, for a successor session (onListenerClient()). */
  waiting?: Array<[Service, net.Socket]>;
}

type Service = InitData['services'][number];

/** Service clients held at most per session while it gets ready or hands over (beyond: refused). */
const MAX_WAITING = 1024;

/**
 * Hooks for dynamic ports (src/relay/dynamic.ts) to extend the outside relay without
 * this file knowing about rules.
 */
export interface OutsideExtension {
  /** The inside relay asked us to open a connection (outside-connect.req). */
  onOutsideConnect?(peer: InsidePeer, stream: Stream): void;
  /** Any control frame the core does not handle (e.g. outside-listen.req). */
  onControl?(peer: InsidePeer, frame: Frame): void;
  /** A service client connected; its stream is being opened. */
  onServiceClient?(peer: InsidePeer, service: InitData['services'][number], stream: Stream, sock: net.Socket, opts?: ServiceClientOptions): void;
  /** A service client's stream was just opened; return true to take over piping it. */
  onServiceStream?(peer: InsidePeer, service: InitData['services'][number], stream: Stream, sock: net.Socket): boolean;
  onPeerClosed?(peer: InsidePeer): void;
}

/** For control connections of client agents (src/relay/clientport.ts). */
export interface ServiceClientOptions {
  /** A passive data listener was opened for this control connection on `port`. */
  onListen?(port: number): void;
  /**
   * Connect for outside-connect.req on this control connection instead of dialling the announced
   * address: an agent's back-connect (clientport.ts), which reaches the program's own listener.
   */
  dial?(host: string, port: number): Promise<net.Socket>;
}

/** The outside relay (ESP): accepts sessions from inside relays and serves their services. */
export class OutsideRelay implements Drainable {
  private server: tls.Server | null = null;
  readonly peers = new Map<string, InsidePeer>();
  /** Draining sessions whose inside relay has a successor session (adopt()): they end by themselves. */
  private readonly retired = new Set<InsidePeer>();
  private pending = 0;
  /** Sessions not yet authenticated, by remote address|port: call to stop their deadline. */
  private readonly waiting = new Map<string, () => void>();
  private readonly psk = new Map<string, Buffer>();
  private readonly trialKeys = new Map<string, Buffer>();
  private readonly nonces = new NonceLog();
  /** Connections refused for max_pending_handshakes, per address, for the log. */
  private readonly refusals = new Refusals();
  private readonly handshakes: AddressRate;
  /** Raw connections closed for a limit: their TLS failure is no news. */
  private readonly refused = new WeakSet<object>();
  allow: AllowList;
  /** Whose service each listener serves now: a successor session takes it over (adopt()). */
  private readonly owner = new WeakMap<net.Server, { peer: InsidePeer; svc: Service }>();
  extension: OutsideExtension = {};
  /** Timeouts for carried connections (limits.*). */
  readonly guard: Guard;
  /** Draining (quiesce()): a session adopted now opens no service listeners. */
  private quiet = false;

  constructor(public cfg: OutsideConfig, readonly log: Logger) {
    this.guard = guardOf(cfg.limits, log);
    this.handshakes = new AddressRate(cfg.limits.handshake_rate, cfg.limits.handshake_burst);
    this.setKeys(cfg.keys);
    this.allow = new AllowList(cfg.allow);
  }

  private setKeys(keys: Map<string, Buffer>): void {
    this.psk.clear();
    this.trialKeys.clear();
    for (const [name, key] of keys) {
      const d = deriveKeys(key);
      this.psk.set(name, d.psk);
      this.trialKeys.set(name, d.trial);
    }
  }

  /**
   * A config read again (SIGHUP): `insides` and `allow` take effect now. An inside relay no longer
   * listed, or whose key changed, has its session ended (it may re-dial with the new key); a
   * service port the new allow list refuses is closed. The other keys need a restart: returned.
   */
  reload(next: OutsideConfig): { added: string[]; removed: string[]; rekeyed: string[]; closed: string[]; needRestart: string[] } {
    const added = [...next.keys.keys()].filter((n) => !this.cfg.keys.has(n));
    const removed = [...this.cfg.keys.keys()].filter((n) => !next.keys.has(n));
    const rekeyed = [...next.keys].filter(([n, k]) => this.cfg.keys.has(n) && !this.cfg.keys.get(n)!.equals(k)).map(([n]) => n);
    const needRestart = (['listen', 'clients', 'limits', 'log_level', 'metrics'] as const).filter((k) => JSON.stringify(this.cfg[k]) !== JSON.stringify(next[k]));
    this.setKeys(next.keys);
    this.allow = new AllowList(next.allow);
    this.cfg = { ...this.cfg, insides: next.insides, keys: next.keys, allow: next.allow };
    for (const p of [...this.peers.values(), ...this.retired]) {
      if (!removed.includes(p.name) && !rekeyed.includes(p.name)) continue;
      const why = removed.includes(p.name) ? 'no longer in the outside relay\'s insides' : 'its key changed';
      p.log.info({ event: 'session.ended_by_config', reason: why }, `session ended: ${why}`);
      p.session.goAway(Result.SHUTDOWN, why);
      p.socket.end();
      this.closePeer(p, true);
    }
    const closed: string[] = [];
    for (const p of this.peers.values()) {
      p.listeners = p.listeners.filter((l) => {
        const svc = this.owner.get(l)?.svc;
        const why = svc && this.allow.listen(svc.listen.host, svc.listen.port);
        if (!svc || !why) return true;
        p.log.warn({ event: 'service.refused', service: svc.name, code: ErrorCode.NOT_ALLOWED, reason: why }, 'service closed: the reloaded allow list refuses it');
        closed.push(svc.name);
        this.closeListener(l);
        return false;
      });
    }
    return { added, removed, rekeyed, closed, needRestart };
  }

  async start(): Promise<net.AddressInfo> {
    const { host, port } = split(this.cfg.listen);
    const server = tls.createServer({ ...serverOptions((id) => this.psk.get(id) ?? null), allowHalfOpen: false });
    this.server = server;
    server.on('connection', (raw: net.Socket) => this.onRawConnection(raw));
    server.on('secureConnection', (s: tls.TLSSocket) => this.onSecure(s));
    server.on('tlsClientError', (err: Error & { code?: string }, s: tls.TLSSocket) => {
      // A connection we closed ourselves (a limit) was logged as such already.
      const raw = (s as tls.TLSSocket & { _parent?: object })._parent;
      if (raw && this.refused.has(raw)) return;
      const unknown = !(s as tls.TLSSocket & { pskIdentity?: string }).pskIdentity;
      const code = /psk|decrypt|bad record mac|handshake failure/i.test(`${err.code} ${err.message}`) ? ErrorCode.AUTH_FAILED : ErrorCode.TLS;
      this.log.warn({ event: 'session.rejected', code, remote: s.remoteAddress, reason: unknown ? 'unknown inside relay name or wrong key' : err.message }, 'TLS handshake failed');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => { server.off('error', reject); resolve(); });
    });
    const addr = server.address() as net.AddressInfo;
    this.log.info({ event: 'outside.listening', address: addr.address, port: addr.port }, 'outside relay listening for sessions');
    return addr;
  }

  /** Graceful stop (drain.ts): no new sessions, no new service clients; open streams go on. */
  quiesce(): void {
    this.quiet = true;
    this.server?.close();
    for (const p of this.peers.values()) {
      for (const l of p.listeners) this.closeListener(l);
      p.listeners = [];
      // The inside relay dials a new session (to whoever listens here next) beside this one.
      if (p.session.established && !p.session.closed) p.session.sendControl(FrameType.DRAINING, 0);
    }
  }

  /** Streams open on every session (service clients, client-port connections, data connections). */
  get active(): number {
    let n = 0;
    for (const p of this.peers.values()) n += p.session.streamCount;
    for (const p of this.retired) n += p.session.streamCount;
    return n;
  }

  async stop(): Promise<void> {
    for (const p of [...this.peers.values(), ...this.retired]) {
      p.session.goAway(Result.SHUTDOWN, 'outside relay shutting down');
      p.socket.end();
      this.closePeer(p, true);
    }
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  /** Unauthenticated peers: a cap on how many may wait, and a short deadline. */
  private onRawConnection(raw: net.Socket): void {
    // Control frames are small and latency-bound; the session batches its own writes.
    raw.setNoDelay(true);
    const remote = raw.remoteAddress ?? '?';
    // One address may not take every pending place: each handshake costs a key exchange here,
    // and inside relays behind one firewall share its address (so the burst is generous).
    const limited = !this.handshakes.take(remote);
    if (limited || this.pending >= this.cfg.limits.max_pending_handshakes) {
      this.refused.add(raw);
      raw.destroy();
      // Logged once per address per 10 s, with the count: a flood must not become one of log lines.
      const n = this.refusals.note(remote);
      const { handshake_rate: rate, handshake_burst: burst, max_pending_handshakes: max } = this.cfg.limits;
      const reason = limited ? `more than limits.handshake_rate (${rate}/s, burst ${burst}) from this address` : `${max} sessions waiting to authenticate (limits.max_pending_handshakes)`;
      if (n) this.log.warn({ event: 'session.rejected', code: ErrorCode.HANDSHAKE_LIMIT, remote, refused: n, reason }, 'too many session handshakes');
      return;
    }
    this.pending++;
    let counted = true;
    const release = () => { if (counted) { counted = false; this.pending--; } };
    const timer = setTimeout(() => {
      this.log.warn({ event: 'session.rejected', code: ErrorCode.HANDSHAKE_TIMEOUT, remote: raw.remoteAddress }, 'peer did not authenticate in time');
      raw.destroy();
    }, this.cfg.limits.handshake_timeout_ms);
    const key = `${raw.remoteAddress}|${raw.remotePort}`;
    this.waiting.set(key, () => { clearTimeout(timer); release(); this.waiting.delete(key); });
    raw.on('close', () => { clearTimeout(timer); release(); this.waiting.delete(key); });
  }

  private onSecure(socket: tls.TLSSocket): void {
    const name = (socket as tls.TLSSocket & { pskIdentity?: string }).pskIdentity!;
    const done = () => this.waiting.get(`${socket.remoteAddress}|${socket.remotePort}`)?.();
    const log = this.log.child({ inside: name, remote: joinHostPort(socket.remoteAddress ?? '?', socket.remotePort ?? 0) });
    const trial = new OutsideTrial(this.trialKeys.get(name)!, channelBinding(socket), this.nonces);
    let state: 'trial' | 'fin' | 'init' | 'open' = 'trial';
    let peer: InsidePeer | null = null;

    const session = sessionOverSocket(socket, {
      role: 'outside',
      maxStreams: this.cfg.limits.max_streams,
      onControl: (f) => {
        try {
          // Keep-alive answers may arrive in any state, also during the trial exchange.
          if (f.type === FrameType.PING) return;
          if (state === 'open') {
            if (f.type === FrameType.DRAINING && peer) return this.onDraining(peer);
            if (peer && this.extension.onControl) return this.extension.onControl(peer, f);
            throw new ProtocolError(`unexpected ${f.type} frame`);
          }
          if (f.stream !== 0) throw new ProtocolError('handshake frames belong on stream 0');
          if (state === 'trial' && f.type === FrameType.TRIAL_REQ) {
            session.sendControl(FrameType.TRIAL_RSP, 0, trial.onRequest(f.payload));
            state = 'fin';
          } else if (state === 'fin' && f.type === FrameType.TRIAL_FIN) {
            trial.onFinish(f.payload);
            state = 'init';
            log.info({ event: 'session.authenticated' }, 'trial exchange passed: inside relay authenticated');
          } else if (state === 'init' && f.type === FrameType.INIT) {
            const init = decodeJson(initSchema, f.payload, 'init data');
            if (init.name !== name) throw new AuthError(`init data names '${init.name}' but the key is '${name}'`);
            peer = { name, session, socket, init, listeners: [], log };
            this.adopt(peer).then((ack) => {
              if (session.closed) return;
              session.established = true;
              state = 'open';
              done();
              session.sendControl(FrameType.INIT_ACK, 0, encodeJson(ack));
              log.info({ event: 'session.established', services: ack.services.filter((s) => s.ok).length }, 'session established');
              const waiting = peer!.waiting ?? [];
              peer!.waiting = undefined;
              for (const [svc, sock] of waiting) this.onServiceClient(peer!, svc, sock);
            }, (err) => abort(err));
          } else {
            throw new ProtocolError(`unexpected frame 0x${f.type.toString(16)} during ${state}`);
          }
        } catch (err) {
          abort(err);
        }
      },
      onStream: (stream) => {
        if (stream.kind === 'outside-connect' && peer && this.extension.onOutsideConnect) this.extension.onOutsideConnect(peer, stream);
        else session.answer(stream, Result.NOT_ALLOWED);
      },
      onClose: (err, remote) => {
        const level = err ? 'warn' : 'info';
        log[level]({ event: 'session.closed', code: err?.code, result: remote === null ? undefined : resultName(remote), reason: err?.message }, 'session closed');
        if (peer) this.closePeer(peer);
        socket.destroy();
      },
    }, { intervalMs: this.cfg.limits.keepalive_interval_ms, timeoutMs: this.cfg.limits.keepalive_timeout_ms });

    const abort = (err: unknown) => {
      const e = err instanceof PortsideError ? err : new ProtocolError(String(err));
      log.warn({ event: 'session.rejected', code: e.code, reason: e.message }, 'session ended');
      session.goAway(e.result, e.message);
      socket.end();
    };
  }

  /** Take over the peer's services: open a listener for each one our allow-list permits. */
  private async adopt(peer: InsidePeer): Promise<InitAck> {
    const old = this.peers.get(peer.name);
    /** A draining predecessor's service ports, by listen address: handed over, not closed and opened again. */
    const spare = new Map<string, net.Server>();
    if (old?.draining) {
      // A stopping inside relay and the one started to follow it: the new session takes the
      // services; the old one carries its open connections to their end.
      old.log.info({ event: 'session.succeeded' }, 'a new session from the same inside relay takes over; this one carries its open connections to their end');
      clearTimeout(old.handover);
      for (const l of old.listeners) spare.set(listenKey(this.owner.get(l)!.svc), l);
      old.listeners = [];
      this.peers.delete(old.name);
      if (!old.session.closed) this.retired.add(old);
    } else if (old) {
      // The newest session wins: the old one is usually a dead link not yet timed out.
      old.log.info({ event: 'session.replaced' }, 'a new session from the same inside relay replaces this one');
      old.session.goAway(Result.SHUTDOWN, 'replaced by a newer session');
      old.socket.destroy();
      this.closePeer(old);
    }
    this.peers.set(peer.name, peer);
    const ack: InitAck = { services: [] };
    for (const svc of peer.init.services) {
      if (this.quiet) {
        ack.services.push({ name: svc.name, ok: false, code: ErrorCode.SHUTTING_DOWN, error: 'the outside relay is shutting down' });
        continue;
      }
      const why = this.allow.listen(svc.listen.host, svc.listen.port);
      if (why) {
        peer.log.warn({ event: 'service.refused', service: svc.name, code: ErrorCode.NOT_ALLOWED, reason: why }, 'service not allowed here');
        ack.services.push({ name: svc.name, ok: false, code: ErrorCode.NOT_ALLOWED, error: why });
        continue;
      }
      try {
        const handed = spare.get(listenKey(svc));
        spare.delete(listenKey(svc));
        const srv = handed ?? await this.listenService(peer, svc);
        const a = srv.address() as net.AddressInfo;
        // Clients held at a port handed over come along; they are served once this session is
        // ready (after INIT_ACK).
        const prev = this.owner.get(srv)!;
        if (handed && prev.peer.waiting) {
          for (const [was, sock] of prev.peer.waiting) if (was === prev.svc) (peer.waiting ??= []).push([svc, sock]);
          prev.peer.waiting = prev.peer.waiting.filter(([was]) => was !== prev.svc);
        }
        peer.listeners.push(srv);
        this.owner.set(srv, { peer, svc });
        peer.log.info({ event: 'service.listening', service: svc.name, address: a.address, port: a.port, target: joinHostPort(svc.target.host, svc.target.port), ...(handed ? { handed_over: true } : {}) }, handed ? 'service port handed over from the session before' : 'service listening');
        ack.services.push({ name: svc.name, ok: true, host: a.address, port: a.port });
      } catch (err) {
        const msg = (err as Error).message;
        peer.log.warn({ event: 'service.refused', service: svc.name, code: ErrorCode.CONNECT_FAILED, reason: msg }, 'cannot listen for service');
        ack.services.push({ name: svc.name, ok: false, code: ErrorCode.CONNECT_FAILED, error: msg });
      }
    }
    // Ports the new session did not ask for again, and the clients held at them.
    for (const l of spare.values()) this.closeListener(l);
    return ack;
  }

  /** Close a service port, and refuse the clients held for it. */
  private closeListener(l: net.Server): void {
    l.close();
    const o = this.owner.get(l);
    if (!o?.peer.waiting) return;
    for (const [svc, s] of o.peer.waiting) if (svc === o.svc) s.destroy();
    o.peer.waiting = o.peer.waiting.filter(([svc]) => svc !== o.svc);
  }

  /**
   * A client at a service port: to its session, or held. Until INIT_ACK has gone out no stream may
   * reach the inside relay; while it drains, a successor (a restart, a reload) takes the port over
   * within limits.service_handover_ms and serves the client then, or the port closes and refuses it.
   */
  private onListenerClient(srv: net.Server, sock: net.Socket): void {
    const o = this.owner.get(srv);
    if (!o || (o.peer.session.closed && !o.peer.draining)) { sock.destroy(); return; }
    if (o.peer.session.established && !o.peer.draining) return this.onServiceClient(o.peer, o.svc, sock);
    if ((o.peer.waiting ??= []).length >= MAX_WAITING) { sock.destroy(); return; }
    sock.on('error', ignore);
    o.peer.waiting.push([o.svc, sock]);
  }

  private listenService(peer: InsidePeer, svc: Service): Promise<net.Server> {
    const srv: net.Server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (sock) => this.onListenerClient(srv, sock));
    this.owner.set(srv, { peer, svc });
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(svc.listen.port, svc.listen.host, () => { srv.off('error', reject); resolve(srv); });
    });
  }

  private onServiceClient(peer: InsidePeer, svc: Service, sock: net.Socket): void {
    const client = joinHostPort(sock.remoteAddress ?? '?', sock.remotePort ?? 0);
    if (!this.allow.source(sock.remoteAddress)) {
      peer.log.warn({ event: 'client.refused', service: svc.name, client, code: ErrorCode.NOT_ALLOWED }, 'client address not in allow.from');
      sock.destroy();
      return;
    }
    if (peer.session.closed) { sock.destroy(); return; }
    // inside-connect.req (608): the inside relay connects to the server. The client's first
    // bytes travel right behind the request (within the window) and wait at the inside relay,
    // which saves a round trip; a refusal closes the client's connection.
    // The client's address travels with the request so the inside relay can check notices against it.
    const stream = peer.session.open(svc.target.host, svc.target.port, Buffer.from(JSON.stringify({ client: sock.remoteAddress })));
    this.extension.onServiceClient?.(peer, svc, stream, sock);
    const fields = { stream: stream.id, service: svc.name, client };
    peer.log.debug({ ...fields, event: 'stream.opening' }, 'inside-connect.req');
    stream.onopen = (result) => {
      // Nothing made here may outlive the set-up (idle connections must stay small).
      stream.onopen = null;
      if (result !== Result.OK) {
        peer.log.warn({ ...fields, event: 'stream.refused', result: resultName(result) }, 'inside relay could not connect to the target');
        sock.destroy();
        return;
      }
      metrics.connections.inc({ path: 'service' });
      peer.log.debug({ ...fields, event: 'stream.opened' }, 'inside-connect.rsp OK');
    };
    if (this.extension.onServiceStream?.(peer, svc, stream, sock)) {
      sock.on('error', ignore);
      return;
    }
    pipeStream(stream, sock, this.guard, { onDone: logClosed(peer.log, fields) });
  }

  /** The inside relay is stopping: its service ports close (new clients are refused by TCP); open streams go on. */
  private onDraining(peer: InsidePeer): void {
    if (peer.draining) return;
    peer.draining = true;
    const ms = this.cfg.limits.service_handover_ms;
    peer.log.info({ event: 'session.draining', services: peer.listeners.length, handover_ms: ms }, 'inside relay stopping: its open connections go on; its service ports wait for a successor, then close');
    const close = () => {
      peer.handover = undefined;
      for (const l of peer.listeners) this.closeListener(l);
      peer.listeners = [];
      // Its session ended while it waited for a successor that did not come.
      if (peer.session.closed && this.peers.get(peer.name) === peer) this.peers.delete(peer.name);
    };
    if (ms) peer.handover = setTimeout(close, ms).unref();
    else close();
  }

  /**
   * A session gone (or replaced, or removed by a reload: `force`). A draining one whose ports wait
   * for a successor keeps them, and its name, until the successor or the handover timer: an inside
   * relay restarted after its old process finished still finds its clients waiting.
   */
  private closePeer(peer: InsidePeer, force = false): void {
    this.retired.delete(peer);
    if (!force && peer.draining && peer.handover && !this.quiet && this.peers.get(peer.name) === peer) {
      this.extension.onPeerClosed?.(peer);
      return;
    }
    clearTimeout(peer.handover);
    for (const l of peer.listeners) this.closeListener(l);
    peer.listeners = [];
    for (const [, s] of peer.waiting ?? []) s.destroy();
    peer.waiting = undefined;
    if (this.peers.get(peer.name) === peer) this.peers.delete(peer.name);
    this.extension.onPeerClosed?.(peer);
  }
}

function ignore(): void {}

function split(hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(':');
  let host = hp.slice(0, i);
  if (host.startsWith('[')) host = host.slice(1, -1);
  return { host, port: Number(hp.slice(i + 1)) };
}

function listenKey(svc: Service): string {
  return joinHostPort(svc.listen.host, svc.listen.port);
}
