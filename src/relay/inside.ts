import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { joinHostPort, splitHostPort, type InsideConfig } from '../config.js';
import { ErrorCode, PortsideError, ProtocolError, Result, resultFromSocketError, resultName } from '../errors.js';
import type { Logger } from '../log.js';
import { metrics } from '../metrics.js';
import { FrameType, type Frame } from '../session/frame.js';
import { InsideTrial, deriveKeys } from '../session/handshake.js';
import { decodeJson, encodeJson, initAckSchema, type InitData } from '../session/init.js';
import type { Session } from '../session/session.js';
import type { Stream } from '../session/stream.js';
import { Settling, type Drainable } from './drain.js';
import { dial, type FirewallSpec } from './firewall.js';
import { sessionOverSocket } from './link.js';
import { guardOf, holdStream, logClosed, pipeStream, type Guard, type HeldData } from './pipe.js';
import { channelBinding, clientOptions } from './tls.js';
import { matchAny, parseDestPattern, type DestPattern } from '../agent/match.js';

export type ServiceSpec = InitData['services'][number];

/** Re-dial interval while an outside relay's successor is expected (onOutsideDraining()). */
const EAGER_REDIAL_MS = 100;

/** Hooks for dynamic ports (src/relay/dynamic.ts). */
export interface InsideExtension {
  /** Extra init data (rules the outside relay needs). */
  initRules?(): Record<string, unknown>;
  /** May a stream to this target be opened even though no service names it? */
  allowsTarget?(host: string, port: number, stream: Stream): boolean;
  /** Take over piping a service connection (e.g. to inspect it); return true if taken. */
  onServiceConnected?(session: Session, service: ServiceSpec, stream: Stream, sock: net.Socket, held: HeldData): boolean;
  onControl?(session: Session, frame: Frame): void;
  onSessionClosed?(session: Session): void;
  /** A client agent's connection to a `reach` target: the service (rules) it is inspected as, if any. */
  serviceFor?(host: string, port: number): ServiceSpec | undefined;
}

/**
 * The inside relay (ISP): dials the outside relay through the firewall, keeps the session up,
 * and connects to inside targets when asked (inside-connect.req, 608-610).
 */
export class InsideRelay extends EventEmitter implements Drainable {
  session: Session | null = null;
  private stopped = false;
  /** Sessions whose outside relay is draining: they finish their connections beside the current one. */
  private readonly retiring = new Map<Session, tls.TLSSocket>();
  /** Draining (quiesce()). */
  private quiet = false;
  /** After the outside relay said DRAINING: until then, dial its successor without backing off. */
  private eagerUntil = 0;
  private eagerFailures = 0;
  /** Sessions told DRAINING whose outside relay has not answered since (drain.ts). */
  private readonly settling = new Settling();
  private attempt = 0;
  private timer: NodeJS.Timeout | null = null;
  private socket: tls.TLSSocket | null = null;
  private readonly keys;
  private readonly firewall: FirewallSpec | undefined;
  readonly services: ServiceSpec[];
  private readonly targets: Set<string>;
  /** `reach`: where client agents may connect through us (docs/client.md). */
  private readonly reach: DestPattern[];
  extension: InsideExtension = {};
  /** Timeouts for carried connections (limits.*). */
  readonly guard: Guard;

  constructor(readonly cfg: InsideConfig, readonly log: Logger) {
    super();
    this.guard = guardOf(cfg.limits, log);
    this.keys = deriveKeys(cfg.sharedKey);
    this.firewall = cfg.firewall ? { ...splitHostPort(cfg.firewall.socks5), username: cfg.firewall.username, password: cfg.firewall.password } : undefined;
    this.services = cfg.services.map((s) => ({ name: s.name, listen: splitHostPort(s.listen), target: splitHostPort(s.target), ...(s.rules ? { rules: s.rules } : {}) }));
    this.targets = new Set(this.services.map((s) => joinHostPort(s.target.host, s.target.port)));
    this.reach = (cfg.reach ?? []).map(parseDestPattern);
  }

  start(): void {
    this.stopped = false;
    void this.connect();
  }

  /**
   * Graceful stop (drain.ts): the outside relay is told (DRAINING) and opens no new streams to us;
   * a lost session is not dialled again. The open connections go on, and so do those it opened
   * before it had our DRAINING (they are on their way, so they are served) and the data
   * connections their rules announce.
   */
  quiesce(): void {
    this.quiet = true;
    if (this.session?.established && !this.session.closed) this.tellDraining(this.session);
  }

  private tellDraining(session: Session): void {
    session.sendControl(FrameType.DRAINING, 0);
    this.settling.start(session);
  }

  /** Streams open on the session. */
  get active(): number {
    let n = (this.session && !this.session.closed ? this.session.streamCount : 0) + this.settling.size;
    for (const s of this.retiring.keys()) n += s.streamCount;
    return n;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const end = (s: Session | null, sock: tls.TLSSocket) => {
      if (s && !s.closed) s.goAway(Result.SHUTDOWN, 'inside relay shutting down');
      sock.end();
      setTimeout(() => sock.destroy(), 1000).unref();
    };
    for (const [s, sock] of this.retiring) end(s, sock);
    // The current session, or a handshake still under way.
    if (this.socket) end(this.session, this.socket);
  }

  /**
   * The outside relay is stopping (DRAINING): this session only finishes its connections, and a
   * new one is dialled at once, to the relay that follows it at the same address (a restart or a
   * rolling update), so our services are open again there while the old one drains.
   */
  private onOutsideDraining(session: Session, sock: tls.TLSSocket): void {
    if (this.session !== session) return;
    this.log.info({ event: 'session.outside_draining', open: session.streamCount }, 'the outside relay is stopping: this session finishes its connections; dialling a new one');
    this.session = null;
    this.socket = null;
    this.retiring.set(session, sock);
    if (!this.stopped && !this.quiet) {
      this.attempt = 0;
      // Its successor is usually a process still starting: try again every 100 ms for a while
      // rather than back off, so the services are open there as soon as it listens.
      this.eagerUntil = Date.now() + this.cfg.limits.shutdown_grace_ms;
      this.eagerFailures = 0;
      void this.connect();
    }
  }

  private async connect(): Promise<void> {
    const { host, port } = splitHostPort(this.cfg.outside);
    const via = this.firewall ? `firewall ${joinHostPort(this.firewall.host, this.firewall.port)}` : 'direct line';
    this.log.info({ event: 'session.dialing', outside: this.cfg.outside, via, attempt: this.attempt }, `opening session to ${this.cfg.outside} via ${via}`);
    let raw: net.Socket;
    try {
      raw = await dial(host, port, this.firewall, this.cfg.limits.connect_timeout_ms);
    } catch (err) {
      const e = err as PortsideError;
      // Waiting for a successor that is still starting: one warning, not one every 100 ms.
      const lvl = Date.now() < this.eagerUntil && this.eagerFailures++ > 0 ? 'debug' : 'warn';
      this.log[lvl]({ event: 'session.dial_failed', code: e.code ?? ErrorCode.CONNECT_FAILED, reason: e.message }, 'cannot reach the outside relay');
      return this.retry();
    }
    if (this.stopped || this.quiet) { raw.destroy(); return; }
    this.log.info({ event: 'session.connected', via }, this.firewall ? 'firewall relayed the connection (connect.rsp)' : 'connected');
    const sock = tls.connect({ socket: raw, ...clientOptions(this.cfg.name, this.keys.psk) });
    this.socket = sock;
    const deadline = setTimeout(() => {
      this.log.warn({ event: 'session.dial_failed', code: ErrorCode.HANDSHAKE_TIMEOUT }, 'session handshake timed out');
      sock.destroy();
      if (!this.session) this.retry(); // before secureConnect no onClose exists to re-dial
    }, this.cfg.limits.handshake_timeout_ms);
    sock.once('error', (err: Error & { code?: string }) => {
      if (this.session) return;
      clearTimeout(deadline);
      const auth = /alert|decrypt|handshake|psk/i.test(`${err.code} ${err.message}`);
      this.log.warn({ event: 'session.dial_failed', code: auth ? ErrorCode.AUTH_FAILED : ErrorCode.TLS, reason: err.message }, auth ? 'outside relay refused our key' : 'TLS failed');
      this.retry();
    });
    sock.once('secureConnect', () => {
      const trial = new InsideTrial(this.keys.trial, channelBinding(sock));
      let state: 'trial' | 'init' | 'open' = 'trial';
      const session: Session = sessionOverSocket(sock, {
        role: 'inside',
        maxStreams: this.cfg.limits.max_streams,
        onControl: (f) => {
          try {
            // Keep-alive answers may arrive in any state, also during the trial exchange.
            if (f.type === FrameType.PING) return this.settling.answer(session, f);
            if (state === 'open') {
              if (f.type === FrameType.DRAINING) return this.onOutsideDraining(session, sock);
              if (this.extension.onControl) return this.extension.onControl(session, f);
              throw new ProtocolError(`unexpected frame 0x${f.type.toString(16)}`);
            }
            if (state === 'trial' && f.type === FrameType.TRIAL_RSP) {
              session.sendControl(FrameType.TRIAL_FIN, 0, trial.onResponse(f.payload));
              this.log.info({ event: 'session.authenticated' }, 'trial exchange passed: outside relay authenticated');
              const init: InitData = { v: 1, name: this.cfg.name, services: this.services, rules: this.extension.initRules?.() ?? {}, ...(this.cfg.reach ? { reach: this.cfg.reach } : {}) };
              session.sendControl(FrameType.INIT, 0, encodeJson(init));
              this.log.info({ event: 'session.init_sent', services: init.services.length }, 'init data sent');
              state = 'init';
            } else if (state === 'init' && f.type === FrameType.INIT_ACK) {
              const ack = decodeJson(initAckSchema, f.payload, 'init ack');
              clearTimeout(deadline);
              state = 'open';
              session.established = true;
              this.attempt = 0;
              for (const s of ack.services) {
                if (s.ok) this.log.info({ event: 'service.ready', service: s.name, address: s.host, port: s.port }, 'service open at the outside relay');
                else this.log.warn({ event: 'service.refused', service: s.name, code: s.code, reason: s.error }, 'outside relay refused the service');
              }
              this.log.info({ event: 'session.established' }, 'session established');
              // Set up while we began to drain (a dial under way): it must know at once.
              if (this.quiet) this.tellDraining(session);
              this.emit('established', session, ack);
            } else throw new ProtocolError(`unexpected frame 0x${f.type.toString(16)} during ${state}`);
          } catch (err) {
            const e = err instanceof PortsideError ? err : new ProtocolError(String(err));
            this.log.warn({ event: 'session.rejected', code: e.code, reason: e.message }, 'session ended');
            session.goAway(e.result, e.message);
            sock.destroy();
          }
        },
        onStream: (stream) => this.onStream(session, stream),
        onClose: (err, remote) => {
          clearTimeout(deadline);
          const lvl = err && !this.stopped ? 'warn' : 'info';
          this.log[lvl]({ event: 'session.closed', code: err?.code, result: remote === null ? undefined : resultName(remote), reason: err?.message }, 'session closed');
          this.extension.onSessionClosed?.(session);
          if (this.session === session) this.session = null;
          sock.destroy();
          this.emit('closed', err);
          // A drained session's end is expected: its successor is up or being dialled.
          if (!this.retiring.delete(session)) this.retry();
        },
      }, { intervalMs: this.cfg.limits.keepalive_interval_ms, timeoutMs: this.cfg.limits.keepalive_timeout_ms });
      this.session = session;
      session.sendControl(FrameType.TRIAL_REQ, 0, trial.start());
    });
  }

  private retry(): void {
    if (this.stopped || this.quiet || this.timer) return;
    if (Date.now() < this.eagerUntil) {
      this.timer = setTimeout(() => { this.timer = null; void this.connect(); }, EAGER_REDIAL_MS);
      return;
    }
    const { min_ms, max_ms } = this.cfg.reconnect;
    // Exponential backoff with jitter, so many inside relays do not return in lockstep.
    const cap = Math.min(max_ms, min_ms * 2 ** Math.min(this.attempt, 16));
    const delay = Math.round(cap / 2 + Math.random() * cap / 2);
    this.attempt++;
    this.log.info({ event: 'session.retry', in_ms: delay, attempt: this.attempt }, 'will dial again');
    this.timer = setTimeout(() => { this.timer = null; void this.connect(); }, delay);
  }

  /** inside-connect.req: connect to the server (609) and answer (610). */
  private onStream(session: Session, stream: Stream): void {
    const target = joinHostPort(stream.host, stream.port);
    // Fields rather than a child logger per stream: idle connections must stay small.
    const fields = { stream: stream.id, target };
    const log = this.log;
    const configured = this.targets.has(target);
    const extended = !configured && stream.kind === 'inside-connect' && !!this.extension.allowsTarget?.(stream.host, stream.port, stream);
    const reached = !configured && !extended && matchAny(this.reach, stream.host, stream.port);
    const service = this.services.find((s) => s.target.host === stream.host && s.target.port === stream.port)
      ?? (reached ? this.extension.serviceFor?.(stream.host, stream.port) : undefined);
    if (stream.kind !== 'inside-connect' || (!configured && !extended && !reached)) {
      log.warn({ ...fields, event: 'stream.refused', code: ErrorCode.NOT_ALLOWED, result: 'NOT_ALLOWED' }, 'target is not a configured service');
      session.answer(stream, Result.NOT_ALLOWED);
      return;
    }
    // The client's first bytes may arrive before the server connection exists: keep them.
    const held = holdStream(stream);
    const sock = net.connect({ host: stream.host, port: stream.port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => sock.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })), this.cfg.limits.connect_timeout_ms);
    stream.onreset = () => sock.destroy(); // the client left before we connected
    const onError = (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (stream.state !== 'opening') return;
      const result = resultFromSocketError(err);
      log.warn({ ...fields, event: 'stream.refused', code: ErrorCode.CONNECT_FAILED, result: resultName(result), reason: err.message }, 'cannot connect to target');
      session.answer(stream, result);
    };
    sock.once('error', onError);
    sock.once('connect', () => {
      clearTimeout(timer);
      if (stream.state !== 'opening') { sock.destroy(); return; }
      session.answer(stream, Result.OK);
      metrics.connections.inc({ path: 'inside' });
      log.debug({ ...fields, event: 'stream.opened' }, 'connected to target');
      if (service && this.extension.onServiceConnected?.(session, service, stream, sock, held)) return;
      // Nothing made here may outlive the set-up (idle connections must stay small).
      sock.off('error', onError);
      pipeStream(stream, sock, this.guard, { onDone: logClosed(log, fields), held });
    });
  }
}
