/**
 * Dynamic ports (patent Fig. 6 steps 613-629, Fig. 12, Fig. 22): the inside relay inspects a
 * service's control connection with the service's rules; when it finds a notice it has the
 * outside relay open the announced connection, rewrites the notice to an address of its own,
 * and carries the new connection too.
 *
 *   client→server notice (PORT/EPRT, DCC): outside-connect.req → the outside relay connects to the
 *     client's listener; the inside relay listens, rewrites the notice to that listener, and
 *     pairs the server's incoming connection with the stream.
 *   server→client notice (227/229): outside-listen.req → the outside relay listens for the client;
 *     the notice is rewritten to that address; the client's connection arrives as an
 *     inside-connect.req to the server's announced port.
 */
import net from 'node:net';
import { joinHostPort, type InsideConfig } from '../config.js';
import { ErrorCode, PortsideError, ProtocolError, Result, resultFromSocketError, resultName } from '../errors.js';
import type { Logger } from '../log.js';
import { Inspector, checkBounce, serializeForOutside, ruleSetFromInit, canonicalIp } from '../rules/index.js';
import type { InspectItem, Notice } from '../rules/index.js';
import { loadRules } from '../rules/load.js';
import type { RuleSet } from '../rules/types.js';
import { FrameType, type Frame } from '../session/frame.js';
import type { Session } from '../session/session.js';
import type { Stream } from '../session/stream.js';
import type { InsideRelay } from './inside.js';
import type { InsidePeer, OutsideRelay } from './outside.js';
import { holdStream, pipeStream, type Guard, type HeldData } from './pipe.js';

// ---------------------------------------------------------------- shared

function parseExtra(stream: Stream): Record<string, unknown> {
  if (!stream.extra) return {};
  try {
    const v = JSON.parse(stream.extra.toString('utf8'));
    return v && typeof v === 'object' ? v : {};
  } catch {
    return {};
  }
}

/** outside-listen.req / .rsp payloads (JSON; docs/protocol.md). */
interface ListenReq { id: number; control: number; target: { host: string; port: number }; timeout_ms: number }
interface ListenRsp { id: number; ok: boolean; host?: string; port?: number; code?: string; error?: string }

function listenOnce(host: string, onConn: (s: net.Socket) => void): Promise<net.Server> {
  const srv = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, onConn);
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, host, () => { srv.off('error', reject); resolve(srv); });
  });
}

function sameHost(a: string | undefined, b: string | undefined): boolean {
  if (!a || !b) return false;
  const x = canonicalIp(a);
  return x !== null && x === canonicalIp(b);
}

// ---------------------------------------------------------------- inside relay

export function checkRulesFiles(cfg: InsideConfig): Map<string, RuleSet> {
  const sets = new Map<string, RuleSet>();
  const names = [...cfg.services.flatMap((s) => (s.rules ? [s.rules] : [])), ...cfg.reach_rules];
  for (const name of names) if (!sets.has(name)) sets.set(name, loadRules(cfg.rules_dir, name));
  return sets;
}

export function attachDynamicInside(relay: InsideRelay): void {
  const ruleSets = checkRulesFiles(relay.cfg);
  let nextListen = 1;
  const listenWaits = new Map<number, { resolve: (r: ListenRsp) => void }>();
  /** Passive data connections the outside relay may ask us to open, by listen id. */
  const passive = new Map<number, { host: string; port: number; timer: NodeJS.Timeout; done: () => void }>();

  relay.extension = {
    initRules: () => Object.fromEntries([...ruleSets].map(([k, v]) => [k, serializeForOutside(v)])),
    // A client agent's connection to the port of a rules file's `initial service-address` is inspected like that service.
    serviceFor: (host, port) => {
      for (const [name, r] of ruleSets) {
        if (r.spec.service.port === port) return { name: `reach:${name}`, listen: { host: '', port: 0 }, target: { host, port }, rules: name };
      }
      return undefined;
    },
    allowsTarget: (host, port, stream) => {
      const id = Number(parseExtra(stream).listen);
      const p = passive.get(id);
      if (!p || p.host !== host || p.port !== port) return false;
      passive.delete(id);
      clearTimeout(p.timer);
      p.done();
      return true;
    },
    onControl: (_session, f: Frame) => {
      if (f.type !== FrameType.OUTSIDE_LISTEN_RSP) throw new ProtocolError(`unexpected frame 0x${f.type.toString(16)}`);
      const rsp = JSON.parse(f.payload.toString('utf8')) as ListenRsp;
      const w = listenWaits.get(rsp.id);
      if (w) { listenWaits.delete(rsp.id); w.resolve(rsp); }
    },
    onSessionClosed: () => {
      for (const w of listenWaits.values()) w.resolve({ id: 0, ok: false, code: ErrorCode.SESSION_CLOSED, error: 'session closed' });
      listenWaits.clear();
    },
    onServiceConnected: (session, service, stream, sock, held) => {
      const rules = service.rules ? ruleSets.get(service.rules) : undefined;
      if (!rules) return false;
      const requestListen = (control: number, target: { host: string; port: number }, timeoutMs: number): Promise<ListenRsp> => {
        const id = nextListen++;
        return new Promise((resolve) => {
          listenWaits.set(id, { resolve });
          session.sendControl(FrameType.OUTSIDE_LISTEN_REQ, 0, Buffer.from(JSON.stringify({ id, control, target, timeout_ms: timeoutMs } satisfies ListenReq)));
        });
      };
      const expectPassive = (id: number, host: string, port: number, timeoutMs: number, done: () => void) => {
        const timer = setTimeout(() => { passive.delete(id); done(); }, timeoutMs + 1000);
        passive.set(id, { host, port, timer, done });
      };
      new InsideControl(relay.log.child({ stream: stream.id, service: service.name }), session, rules, stream, sock, requestListen, expectPassive, relay.guard).start(held);
      return true;
    },
  };
}

type ListenFn = (control: number, target: { host: string; port: number }, timeoutMs: number) => Promise<ListenRsp>;

/** One inspected control connection at the inside relay. */
class InsideControl {
  private readonly inspector: Inspector;
  private readonly client: string | undefined;
  private readonly agentBack: boolean;
  private pending = 0;
  // client→server: stream → inspector → server socket
  private c2s: InspectItem[] = [];
  private c2sBusy = false;
  private c2sUngranted = 0;
  private c2sEnded = false;
  // server→client: server socket → inspector → stream
  private s2c: InspectItem[] = [];
  private s2cBusy = false;
  private s2cEnded = false;
  private serverEnded = false;
  private dead = false;

  constructor(
    private readonly log: Logger,
    private readonly session: Session,
    private readonly rules: RuleSet,
    private readonly stream: Stream,
    private readonly sock: net.Socket,
    private readonly requestListen: ListenFn,
    private readonly expectPassive: (id: number, host: string, port: number, timeoutMs: number, done: () => void) => void,
    private readonly guard: Guard,
  ) {
    this.inspector = new Inspector(rules);
    const extra = parseExtra(stream);
    this.client = typeof extra.client === 'string' ? extra.client : undefined;
    this.agentBack = extra.back === true;
  }

  start(held?: HeldData): void {
    const { stream, sock } = this;
    sock.setNoDelay(true);
    // A vanished server is found by keep-alive probes; no idle limit (see attachDynamicOutside).
    if (this.guard.keepAliveMs) sock.setKeepAlive(true, this.guard.keepAliveMs);
    stream.ondata = (buf) => {
      this.c2sUngranted += buf.length;
      this.c2s.push(...this.inspector.push('c2s', buf));
      this.pumpC2S();
    };
    stream.onend = () => {
      this.c2s.push(...this.inspector.flush('c2s'));
      this.c2sEnded = true;
      this.halfClosed();
      this.pumpC2S();
    };
    sock.on('drain', () => this.pumpC2S());
    sock.on('data', (buf: Buffer) => {
      this.s2c.push(...this.inspector.push('s2c', buf));
      this.pumpS2C();
    });
    sock.on('end', () => {
      this.serverEnded = true;
      this.halfClosed();
      this.s2c.push(...this.inspector.flush('s2c'));
      this.s2cEnded = true;
      this.pumpS2C();
    });
    stream.ondrain = () => this.pumpS2C();
    sock.on('timeout', () => {
      const ms = this.guard.halfCloseMs;
      this.guard.log.info({ event: 'stream.timeout', code: ErrorCode.IDLE_TIMEOUT, stream: stream.id, peer: joinHostPort(sock.remoteAddress ?? '?', sock.remotePort ?? 0), reason: `half-closed with no bytes for ${ms} ms (limits.half_close_timeout_ms)` }, 'control connection closed: idle');
      this.kill(Result.TIMEOUT, 'half-close timeout');
    });
    stream.onreset = (result) => this.kill(result, 'stream reset');
    sock.on('error', (err: NodeJS.ErrnoException) => this.kill(resultFromSocketError(err), err.message));
    sock.on('close', () => {
      if (this.serverEnded && stream.remoteEnded) this.log.debug({ event: 'stream.closed', result: 'OK' }, 'control connection closed');
      else this.kill(Result.CANCELLED, 'server connection closed');
    });
    if (held) {
      // Replay what the client sent before the server connection existed.
      for (const b of held.bufs) stream.ondata(b);
      if (held.ended) stream.onend();
    }
    if (sock.isPaused()) sock.resume();
  }

  /**
   * The first FIN either way: a side that never sends its own would hold the connection for ever.
   * No idle limit before that: a control connection idles while its data connection works.
   */
  private halfClosed(): void {
    if (this.guard.halfCloseMs && !(this.serverEnded && this.stream.remoteEnded)) this.sock.setTimeout(this.guard.halfCloseMs);
  }

  private kill(result: number, why: string): void {
    if (this.dead) return;
    this.dead = true;
    this.log.debug({ event: 'stream.closed', result: resultName(result), reason: why }, 'control connection closed');
    this.stream.reset(result);
    if (!this.sock.destroyed) this.sock.destroy();
  }

  private pumpC2S(): void {
    while (!this.c2sBusy && !this.dead && this.c2s.length) {
      if (this.sock.writableNeedDrain) return;
      const item = this.c2s.shift()!;
      if (item.kind === 'data') this.sock.write(item.buf);
      else if (item.kind === 'error') this.onError('c2s', item);
      else {
        this.c2sBusy = true;
        this.handleNotice(item.notice).then((out) => {
          this.c2sBusy = false;
          if (out) this.sock.write(out);
          this.pumpC2S();
        });
      }
    }
    if (this.c2sBusy || this.dead || this.c2s.length || this.sock.writableNeedDrain) return;
    if (this.c2sUngranted) { this.stream.consumed(this.c2sUngranted); this.c2sUngranted = 0; }
    if (this.c2sEnded) { this.c2sEnded = false; this.sock.end(); }
  }

  private pumpS2C(): void {
    while (!this.s2cBusy && !this.dead && this.s2c.length) {
      const item = this.s2c.shift()!;
      if (item.kind === 'data') {
        if (!this.stream.write(item.buf)) { this.sock.pause(); return; }
      } else if (item.kind === 'error') this.onError('s2c', item);
      else {
        this.s2cBusy = true;
        this.sock.pause();
        this.handleNotice(item.notice).then((out) => {
          this.s2cBusy = false;
          if (out) this.stream.write(out);
          this.pumpS2C();
        });
      }
    }
    if (this.s2cBusy || this.dead || this.s2c.length) return;
    if (this.stream.bufferedBytes === 0 && this.sock.isPaused() && !this.s2cEnded) this.sock.resume();
    if (this.s2cEnded) { this.s2cEnded = false; this.stream.end(); }
  }

  private onError(dir: 'c2s' | 's2c', item: Extract<InspectItem, { kind: 'error' }>): void {
    this.log.warn({ event: 'notice.refused', code: item.code, rule: item.rule, direction: dir, reason: item.message }, 'notice refused');
    if (item.fatal) return this.kill(Result.LINE_TOO_LONG, item.message);
    this.refuse(dir, item.reply, item.replace);
  }

  /** Send the rule's refusal: a reply back to the notice's sender and/or a replacement onward. */
  private refuse(dir: 'c2s' | 's2c', reply?: Buffer, replace?: Buffer): Buffer | null {
    if (reply) {
      if (dir === 'c2s') this.stream.write(reply);
      else this.sock.write(reply);
    }
    return replace ?? null;
  }

  /** Returns what to send onward in place of the notice line. */
  private async handleNotice(n: Notice): Promise<Buffer | null> {
    const announced = joinHostPort(n.host || '(server)', n.port);
    this.log.info({ event: 'notice.found', notice: n.rule, announced, direction: n.direction }, 'dynamic port notice');
    const refused = (code: string, reason: string) => {
      this.log.warn({ event: 'notice.refused', code, notice: n.rule, announced, reason }, 'notice refused');
      return this.refuse(n.direction, n.refusal.reply, n.refusal.replace);
    };
    if (this.pending >= this.rules.policy.maxPending) return refused(ErrorCode.LIMIT, `more than ${this.rules.policy.maxPending} data connections pending`);
    const peer = n.direction === 'c2s' ? this.client : this.sock.remoteAddress;
    // A client agent's control connection with a back-connect offer: the program announces its own
    // machine's address, which the outside relay hands only to that agent, and the agent connects
    // only to its own addresses (clientport.ts, docs/client.md) — no bounce to compare here.
    if (this.agentBack && n.direction === 'c2s' && n.action === 'connect-back') {
      // checked by the agent
    } else if (peer) {
      const bounce = checkBounce(n, peer);
      if (bounce) return refused(bounce.code, bounce.message);
    } else if (n.bounceCheck) return refused(ErrorCode.RULE_REFUSED, 'peer address unknown');
    try {
      return n.action === 'connect-back' ? await this.connectBack(n) : await this.listenOutside(n);
    } catch (err) {
      const e = err as PortsideError;
      return refused(e.code ?? ErrorCode.RULE_REFUSED, e.message);
    }
  }

  /** Active mode (617-629). */
  private async connectBack(n: Notice): Promise<Buffer | null> {
    const timeoutMs = this.rules.policy.acceptTimeoutMs;
    // outside-connect.req: the outside relay connects to the client's announced listener.
    const data = this.session.open(n.host, n.port, Buffer.from(JSON.stringify({ control: this.stream.id })));
    const held = holdStream(data);
    const result = await new Promise<number>((r) => { data.onopen = r; });
    if (result !== Result.OK) throw new PortsideError(ErrorCode.CONNECT_FAILED, `outside relay could not connect to ${n.host}:${n.port}: ${resultName(result)}`, result);
    const local = this.sock.localAddress!;
    const serverAddr = this.sock.remoteAddress;
    this.pending++;
    let settled = false;
    const settle = () => { if (!settled) { settled = true; this.pending--; } };
    const srv = await listenOnce(local, (conn) => {
      // accept-from any (IRC DCC): the peer is another intranet client, not the server.
      if (n.acceptFrom !== 'any' && !sameHost(conn.remoteAddress, serverAddr)) {
        this.log.warn({ event: 'data.refused', code: ErrorCode.NOT_ALLOWED, peer: conn.remoteAddress }, 'data connection from an unexpected peer');
        conn.destroy();
        return;
      }
      clearTimeout(timer);
      srv.close();
      settle();
      this.log.info({ event: 'data.accepted', peer: joinHostPort(conn.remoteAddress!, conn.remotePort!), stream: data.id, accept_from: n.acceptFrom }, 'peer connected to the rewritten address');
      pipeStream(data, conn, this.guard, { held });
    });
    const timer = setTimeout(() => {
      srv.close();
      settle();
      this.log.warn({ event: 'data.timeout', code: ErrorCode.TIMEOUT, stream: data.id }, 'server did not connect in time');
      data.reset(Result.TIMEOUT);
    }, timeoutMs);
    data.onreset = () => { clearTimeout(timer); srv.close(); settle(); };
    this.log.info({ event: 'outside-connect.done', stream: data.id, target: joinHostPort(n.host, n.port), result: 'OK' }, 'outside-connect.rsp');
    const port = (srv.address() as net.AddressInfo).port;
    const out = n.rewrite(local, port);
    this.log.info({ event: 'notice.rewritten', rewritten: joinHostPort(local, port) }, 'notice rewritten to the inside relay');
    return out;
  }

  /** Passive mode: the server listens; the outside relay listens for the client on its behalf. */
  private async listenOutside(n: Notice): Promise<Buffer | null> {
    const timeoutMs = this.rules.policy.acceptTimeoutMs;
    const host = n.host || this.sock.remoteAddress!;
    const rsp = await this.requestListen(this.stream.id, { host, port: n.port }, timeoutMs);
    if (!rsp.ok || !rsp.host || !rsp.port) throw new PortsideError((rsp.code as never) ?? ErrorCode.CONNECT_FAILED, `outside relay cannot listen: ${rsp.error ?? 'refused'}`, Result.GENERAL_FAILURE);
    this.pending++;
    this.expectPassive(rsp.id, host, n.port, timeoutMs, () => { this.pending--; });
    const out = n.rewrite(rsp.host, rsp.port);
    this.log.info({ event: 'notice.rewritten', rewritten: joinHostPort(rsp.host, rsp.port) }, 'notice rewritten to the outside relay');
    return out;
  }
}

// ---------------------------------------------------------------- outside relay

interface ControlInfo { client: string; local: string; onListen?: (port: number) => void; dial?: (host: string, port: number) => Promise<net.Socket> }

export function attachDynamicOutside(relay: OutsideRelay): void {
  const controlGuard: Guard = { ...relay.guard, idleMs: 0 };
  /** Control connections of services with rules, per peer, by stream id. */
  const controls = new WeakMap<InsidePeer, Map<number, ControlInfo>>();
  const listeners = new WeakMap<InsidePeer, Set<net.Server>>();
  const compiled = new WeakMap<object, RuleSet>();
  const of = <T>(m: WeakMap<InsidePeer, T>, p: InsidePeer, make: () => T): T => {
    let v = m.get(p);
    if (!v) { v = make(); m.set(p, v); }
    return v;
  };

  relay.extension = {
    onServiceClient: (peer, svc, stream, sock, opts) => {
      if (!svc.rules) return;
      const map = of(controls, peer, () => new Map<number, ControlInfo>());
      map.set(stream.id, { client: sock.remoteAddress!, local: sock.localAddress!, onListen: opts?.onListen, dial: opts?.dial });
      sock.once('close', () => map.delete(stream.id));
    },

    /** [0115]: the outside relay re-runs the client-to-server checks, so a bounce never reaches the inside. */
    onServiceStream: (peer, svc, stream, sock) => {
      const spec = svc.rules ? peer.init.rules[svc.rules] : undefined;
      if (!spec) return false;
      let rules = compiled.get(spec as object);
      try {
        if (!rules) compiled.set(spec as object, (rules = ruleSetFromInit(spec)));
      } catch (err) {
        peer.log.warn({ event: 'rules.invalid', code: (err as PortsideError).code, service: svc.name, reason: (err as Error).message }, 'rules in init data rejected');
        stream.reset(Result.NOT_ALLOWED);
        sock.destroy();
        return true;
      }
      if (!rules.esp.check) return false;
      const inspector = new Inspector(rules, { directions: ['c2s'] });
      const client = sock.remoteAddress ?? '';
      const log = peer.log.child({ stream: stream.id, service: svc.name });
      const check = (items: InspectItem[]): Buffer[] => {
        const out: Buffer[] = [];
        for (const item of items) {
          if (item.kind === 'data') out.push(item.buf);
          else if (item.kind === 'notice') {
            const bounce = checkBounce(item.notice, client);
            if (!bounce) out.push(item.line);
            else {
              log.warn({ event: 'notice.refused', code: bounce.code, notice: item.notice.rule, reason: bounce.message, at: 'outside' }, 'notice refused at the outside relay');
              if (item.notice.refusal.reply) sock.write(item.notice.refusal.reply);
              if (item.notice.refusal.replace) out.push(item.notice.refusal.replace);
            }
          } else {
            log.warn({ event: 'notice.refused', code: item.code, rule: item.rule, reason: item.message, at: 'outside' }, 'notice refused at the outside relay');
            if (item.fatal) { stream.reset(Result.LINE_TOO_LONG); sock.destroy(); break; }
            if (item.reply) sock.write(item.reply);
            if (item.replace) out.push(item.replace);
          }
        }
        return out;
      };
      // A control connection idles while its data connection carries a long transfer: no idle
      // limit for it (the inside relay's inspection loop has none either).
      pipeStream(stream, sock, controlGuard, {
        onDone: (r, m) => log.debug({ event: 'stream.closed', result: resultName(r), reason: m }, 'stream closed'),
        filter: { data: (buf) => check(inspector.push('c2s', buf)), end: () => check(inspector.flush('c2s')) },
      });
      return true;
    },

    /** outside-connect.req (618): connect to the client's listener (619), answer (622). */
    onOutsideConnect: (peer, stream) => {
      const log = peer.log.child({ stream: stream.id });
      const control = Number(parseExtra(stream).control);
      const info = controls.get(peer)?.get(control);
      const target = joinHostPort(stream.host, stream.port);
      log.info({ event: 'outside-connect.req', target }, 'outside-connect.req');
      // A client agent's control connection (clientport.ts): the connection goes back to that agent
      // alone, which connects on only to its own machine's addresses (it checks).
      if (info?.dial) {
        stream.onreset = () => {};
        info.dial(stream.host, stream.port).then((sock) => {
          if (stream.state !== 'opening') { sock.destroy(); return; }
          peer.session.answer(stream, Result.OK);
          log.info({ event: 'outside-connect.done', target, result: 'OK', via: 'agent' }, 'connected to the client through its agent');
          pipeStream(stream, sock, relay.guard);
        }, (err: NodeJS.ErrnoException) => {
          if (stream.state !== 'opening') return;
          const r = resultFromSocketError(err);
          log.warn({ event: 'outside-connect.done', target, result: resultName(r), code: ErrorCode.CONNECT_FAILED, via: 'agent' }, 'cannot connect to the client through its agent');
          peer.session.answer(stream, r);
        });
        return;
      }
      // A lying inside relay cannot make us connect anywhere but to the client it serves.
      if (!info || !sameHost(info.client, stream.host)) {
        log.warn({ event: 'outside-connect.refused', code: ErrorCode.NOT_ALLOWED, target }, 'not the address of a client of a control connection');
        peer.session.answer(stream, Result.NOT_ALLOWED);
        return;
      }
      const sock = net.connect({ host: stream.host, port: stream.port, allowHalfOpen: true, noDelay: true });
      const timer = setTimeout(() => sock.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })), relay.cfg.limits.connect_timeout_ms);
      stream.onreset = () => sock.destroy();
      sock.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (stream.state !== 'opening') return;
        const r = resultFromSocketError(err);
        log.warn({ event: 'outside-connect.done', target, result: resultName(r), code: ErrorCode.CONNECT_FAILED }, 'cannot connect to the client');
        peer.session.answer(stream, r);
      });
      sock.once('connect', () => {
        clearTimeout(timer);
        if (stream.state !== 'opening') { sock.destroy(); return; }
        peer.session.answer(stream, Result.OK);
        log.info({ event: 'outside-connect.done', target, result: 'OK' }, 'connected to the client');
        pipeStream(stream, sock, relay.guard);
      });
    },

    onControl: (peer, f) => {
      if (f.type !== FrameType.OUTSIDE_LISTEN_REQ) throw new ProtocolError(`unexpected frame 0x${f.type.toString(16)}`);
      let req: ListenReq;
      try {
        req = JSON.parse(f.payload.toString('utf8')) as ListenReq;
      } catch {
        throw new ProtocolError('outside-listen.req is not JSON');
      }
      const reply = (r: ListenRsp) => peer.session.sendControl(FrameType.OUTSIDE_LISTEN_RSP, 0, Buffer.from(JSON.stringify(r)));
      const info = controls.get(peer)?.get(req.control);
      if (!info || typeof req.id !== 'number' || !req.target || typeof req.target.port !== 'number') {
        peer.log.warn({ event: 'outside-listen.refused', code: ErrorCode.NOT_ALLOWED }, 'outside-listen.req for an unknown control connection');
        return reply({ id: req.id, ok: false, code: ErrorCode.NOT_ALLOWED, error: 'unknown control connection' });
      }
      const timeoutMs = Math.min(Math.max(1000, Number(req.timeout_ms) || 30_000), 300_000);
      const set = of(listeners, peer, () => new Set<net.Server>());
      const log = peer.log.child({ control: req.control });
      let timer: NodeJS.Timeout;
      listenOnce(info.local, (conn) => {
        if (!sameHost(conn.remoteAddress, info.client)) {
          log.warn({ event: 'data.refused', code: ErrorCode.NOT_ALLOWED, peer: conn.remoteAddress }, 'data connection from an unexpected peer');
          conn.destroy();
          return;
        }
        clearTimeout(timer);
        srvRef.close();
        set.delete(srvRef);
        const stream = peer.session.open(req.target.host, req.target.port, Buffer.from(JSON.stringify({ listen: req.id, client: conn.remoteAddress })));
        conn.on('error', () => {});
        stream.onopen = (r) => {
          if (r !== Result.OK) {
            log.warn({ event: 'stream.refused', result: resultName(r) }, 'inside relay could not open the passive data connection');
            conn.destroy();
            return;
          }
          log.info({ event: 'data.accepted', peer: joinHostPort(conn.remoteAddress!, conn.remotePort!), stream: stream.id }, 'client connected for passive data');
          pipeStream(stream, conn, relay.guard);
        };
      }).then((srv) => {
        srvRef = srv;
        set.add(srv);
        timer = setTimeout(() => { srv.close(); set.delete(srv); log.warn({ event: 'data.timeout', code: ErrorCode.TIMEOUT }, 'client did not connect in time'); }, timeoutMs);
        const a = srv.address() as net.AddressInfo;
        log.info({ event: 'outside-listen.done', address: a.address, port: a.port }, 'listening for passive data');
        info.onListen?.(a.port);
        reply({ id: req.id, ok: true, host: a.address, port: a.port });
      }, (err: Error) => reply({ id: req.id, ok: false, code: ErrorCode.CONNECT_FAILED, error: err.message }));
      let srvRef!: net.Server;
    },

    onPeerClosed: (peer) => {
      for (const s of listeners.get(peer) ?? []) s.close();
      listeners.delete(peer);
      controls.delete(peer);
    },
  };
}
