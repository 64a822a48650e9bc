import { describe, expect, it } from 'vitest';
import { ErrorCode, PortsideError, Result } from '../../src/errors.js';
import { FrameDecoder } from '../../src/session/decode.js';
import { encodeAddress, encodeFrame } from '../../src/session/encode.js';
import { Flag, FrameType, type Frame } from '../../src/session/frame.js';
import { Session, type SessionOptions } from '../../src/session/session.js';
import type { Stream } from '../../src/session/stream.js';
import { rng } from '../support/rng.js';

function pattern(id: number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (id * 31 + i * 7) & 0xff;
  return b;
}

type Extra = Partial<Omit<SessionOptions, 'role' | 'onWrite' | 'schedule'>>;

/**
 * Two Sessions joined in memory. Every flush and every delivery goes through one manual
 * queue, so the test decides when bytes move (`run()`), and deliveries are cut at random
 * boundaries so the decoder sees arbitrary chunking.
 */
function pair(o: { outside?: Extra; inside?: Extra; seed?: number } = {}) {
  const q: Array<() => void> = [];
  const schedule = (fn: () => void) => { q.push(fn); };
  const r = rng(o.seed ?? 1);
  const closes: Record<'outside' | 'inside', Array<{ err: PortsideError | null; remote: number | null }>> = { outside: [], inside: [] };
  const wire = { outside: 0, inside: 0 };
  const mk = (role: 'outside' | 'inside', extra: Extra | undefined, peer: () => Session) => new Session({
    role,
    schedule,
    onClose: (err, remote) => closes[role].push({ err, remote }),
    ...extra,
    onWrite(chunks) {
      const all = Buffer.concat(chunks); // the chunks may be user buffers: snapshot now
      wire[role] += all.length;
      q.push(() => {
        let off = 0;
        while (off < all.length) {
          const n = 1 + Math.floor(r() * 40_000);
          peer().parse(all.subarray(off, off + n));
          off += n;
        }
      });
    },
  });
  const outside: Session = mk('outside', o.outside, () => inside);
  const inside: Session = mk('inside', o.inside, () => outside);
  outside.established = inside.established = true;
  const run = (limit = 10_000_000) => {
    let n = 0;
    while (q.length) {
      q.shift()!();
      if (++n > limit) throw new Error('queue never settles');
    }
    return n;
  };
  return { outside, inside, run, closes, wire };
}

/** A Session fed hand-made frames; what it writes back is decoded for inspection. */
function lone(role: 'outside' | 'inside', extra: Extra = {}) {
  const dec = new FrameDecoder(16 * 1024 * 1024);
  const sent: Frame[] = [];
  const closes: Array<{ err: PortsideError | null; remote: number | null }> = [];
  const s = new Session({
    role,
    schedule: (fn) => fn(),
    onWrite: (chunks) => { for (const f of dec.push(Buffer.concat(chunks))) sent.push({ ...f, payload: Buffer.from(f.payload) }); },
    onClose: (err, remote) => closes.push({ err, remote }),
    ...extra,
  });
  return { s, sent, closes };
}

describe('session: open, accept, refuse', () => {
  it('accept reaches the opener as OK; refuse carries its result code', () => {
    const { outside, inside, run } = pair({
      inside: {
        onStream: (st) => {
          expect(st.kind).toBe('inside-connect');
          inside.answer(st, st.port === 80 ? Result.OK : st.port === 81 ? Result.CONNECTION_REFUSED : Result.HOST_NOT_FOUND);
        },
      },
    });
    const results: Record<number, number> = {};
    const streams = [80, 81, 82].map((port) => {
      const st = outside.open('10.0.0.1', port);
      st.onopen = (r) => { results[port] = r; };
      return st;
    });
    expect(streams.map((s) => s.id)).toEqual([1, 3, 5]); // the outside relay opens odd ids
    run();
    expect(results).toEqual({ 80: Result.OK, 81: Result.CONNECTION_REFUSED, 82: Result.HOST_NOT_FOUND });
    expect(streams.map((s) => s.state)).toEqual(['open', 'closed', 'closed']);
    expect(outside.streamCount).toBe(1);
    expect(inside.streamCount).toBe(1);
  });

  it('the inside relay opens even ids with outside-connect.req and the extra bytes arrive', () => {
    let seen: Stream | null = null;
    const { outside, inside, run } = pair({ outside: { onStream: (st) => { seen = st; outside.answer(st, Result.OK); } } });
    const st = inside.open('192.0.2.9', 2121, Buffer.from('peer=1.2.3.4'));
    let res = -1;
    st.onopen = (r) => { res = r; };
    run();
    expect(st.id).toBe(2);
    expect(res).toBe(Result.OK);
    expect(seen!.kind).toBe('outside-connect');
    expect(seen!.host).toBe('192.0.2.9');
    expect(seen!.port).toBe(2121);
    expect(seen!.extra?.toString()).toBe('peer=1.2.3.4');
  });

  it('with no onStream handler the request is refused NOT_ALLOWED', () => {
    const { outside, run } = pair();
    let res = -1;
    outside.open('h', 1).onopen = (r) => { res = r; };
    run();
    expect(res).toBe(Result.NOT_ALLOWED);
  });

  it('beyond maxStreams the peer answers LIMIT_EXCEEDED', () => {
    const { outside, inside, run } = pair({ inside: { maxStreams: 3, onStream: (st) => inside.answer(st, Result.OK) } });
    const res: number[] = [];
    for (let i = 0; i < 5; i++) outside.open('h', 1).onopen = (r) => res.push(r);
    run();
    expect(res.sort()).toEqual([Result.OK, Result.OK, Result.OK, Result.LIMIT_EXCEEDED, Result.LIMIT_EXCEEDED].sort());
    expect(inside.streamCount).toBe(3);
  });
});

describe('session: many streams', () => {
  it('2000 concurrent streams each carry their own bytes both ways', () => {
    const N = 2000;
    const SIZE = 3000;
    const { outside, inside, run } = pair({
      seed: 7,
      inside: {
        onStream: (st) => {
          inside.answer(st, Result.OK);
          // Echo, then end when the opener ends.
          st.ondata = (b) => { st.write(Buffer.from(b)); st.consumed(b.length); };
          st.onend = () => st.end();
        },
      },
    });
    const got = new Map<number, Buffer[]>();
    const ended = new Set<number>();
    const streams: Stream[] = [];
    for (let i = 0; i < N; i++) {
      const st = outside.open('10.1.1.1', 1000 + (i % 50));
      got.set(st.id, []);
      st.ondata = (b) => { got.get(st.id)!.push(Buffer.from(b)); st.consumed(b.length); };
      st.onend = () => ended.add(st.id);
      st.write(pattern(st.id, SIZE));
      st.end();
      streams.push(st);
    }
    expect(outside.streamCount).toBe(N);
    run();
    expect(ended.size).toBe(N);
    for (const st of streams) {
      expect(Buffer.concat(got.get(st.id)!).equals(pattern(st.id, SIZE))).toBe(true);
      expect(st.state).toBe('closed');
      expect(st.result).toBe(Result.OK);
    }
    expect(outside.streamCount).toBe(0);
    expect(inside.streamCount).toBe(0);
  });
});

describe('session: credit windows', () => {
  const WINDOW = 64 * 1024;
  const TOTAL = 1024 * 1024;
  const CHUNK = 16 * 1024;

  /** A producer that respects write() === false and resumes on ondrain. */
  function produce(st: Stream, total: number, log: { maxBuffered: number; falses: number }) {
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        const n = Math.min(CHUNK, total - sent);
        const ok = st.write(pattern(st.id, total).subarray(sent, sent + n));
        sent += n;
        log.maxBuffered = Math.max(log.maxBuffered, st.bufferedBytes);
        if (!ok) { log.falses++; return; }
      }
      st.end();
    };
    st.ondrain = pump;
    pump();
  }

  it('a stalled reader gets at most one window, and does not stall another stream', () => {
    const recv = new Map<number, { bufs: Buffer[]; bytes: number; consume: boolean; stream: Stream; ended: boolean }>();
    const { outside, inside, run } = pair({
      outside: { window: WINDOW, maxFrame: CHUNK },
      inside: {
        window: WINDOW,
        maxFrame: CHUNK,
        onStream: (st) => {
          inside.answer(st, Result.OK);
          const rec = { bufs: [] as Buffer[], bytes: 0, consume: st.port === 2, stream: st, ended: false };
          recv.set(st.id, rec);
          st.ondata = (b) => {
            rec.bufs.push(Buffer.from(b));
            rec.bytes += b.length;
            if (rec.consume) st.consumed(b.length);
          };
          st.onend = () => { rec.ended = true; };
        },
      },
    });
    const stalled = outside.open('h', 1);
    const flowing = outside.open('h', 2);
    const logS = { maxBuffered: 0, falses: 0 };
    const logF = { maxBuffered: 0, falses: 0 };
    stalled.onopen = () => produce(stalled, TOTAL, logS);
    flowing.onopen = () => produce(flowing, TOTAL, logF);
    run();
    const rs = recv.get(stalled.id)!;
    const rf = recv.get(flowing.id)!;
    // The stalled stream: exactly one window crossed, the sender told to stop.
    expect(rs.bytes).toBe(WINDOW);
    expect(logS.falses).toBeGreaterThan(0);
    expect(stalled.sendWindow).toBe(0);
    expect(rs.stream.recvWindow).toBe(0);
    // The other stream on the same session finished in full.
    expect(rf.bytes).toBe(TOTAL);
    expect(rf.ended).toBe(true);
    expect(Buffer.concat(rf.bufs).equals(pattern(flowing.id, TOTAL))).toBe(true);
    // Memory held per stream: the sender never queued more than one write's worth.
    expect(logS.maxBuffered).toBeLessThanOrEqual(CHUNK);
    expect(logF.maxBuffered).toBeLessThanOrEqual(CHUNK);

    // The reader wakes up: consumed() reopens the window and everything arrives.
    rs.consume = true;
    rs.stream.consumed(rs.bytes);
    run();
    expect(rs.bytes).toBe(TOTAL);
    expect(rs.ended).toBe(true);
    expect(Buffer.concat(rs.bufs).equals(pattern(stalled.id, TOTAL))).toBe(true);
  });

  it('window updates are batched: one per quarter window consumed', () => {
    let updates = 0;
    const { outside, inside, run } = pair({
      outside: { window: WINDOW, maxFrame: CHUNK },
      inside: { window: WINDOW, maxFrame: CHUNK, onStream: (st) => { inside.answer(st, Result.OK); st.ondata = (b) => st.consumed(b.length); } },
    });
    const st = outside.open('h', 1);
    const grant = st._grant.bind(st);
    st._grant = (n: number) => { updates++; expect(n).toBeGreaterThanOrEqual(WINDOW / 4); grant(n); };
    st.onopen = () => produce(st, TOTAL, { maxBuffered: 0, falses: 0 });
    run();
    expect(updates).toBeGreaterThanOrEqual(TOTAL / WINDOW);
    expect(updates).toBeLessThanOrEqual((TOTAL / WINDOW) * 4);
  });

  it('data beyond the window ends the session with PS_ERR_FLOW_CONTROL and a GOAWAY', () => {
    const { s, sent, closes } = lone('inside', { window: 1000, onStream: (st) => s.answer(st, Result.OK) });
    s.established = true;
    s.parse(encodeFrame(FrameType.INSIDE_CONNECT_REQ, 0, 1, encodeAddress('t', 1)));
    let delivered = 0;
    s.getStream(1)!.ondata = (b) => { delivered += b.length; };
    s.parse(encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(600)));
    expect(closes).toHaveLength(0);
    s.parse(encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(600)));
    expect(delivered).toBe(600);
    expect(closes).toHaveLength(1);
    expect(closes[0].err?.code).toBe(ErrorCode.FLOW_CONTROL);
    const ga = sent.find((f) => f.type === FrameType.GOAWAY)!;
    expect(ga.stream).toBe(0);
    expect(ga.payload[0]).toBe(Result.FLOW_CONTROL_ERROR);
    expect(s.closed).toBe(true);
  });

  it('a zero window update or one that overflows the window is a flow-control error', () => {
    for (const inc of [0, 0x7fffffff]) {
      const { s, closes } = lone('outside', {});
      s.established = true;
      const st = s.open('h', 1);
      s.parse(encodeFrame(FrameType.INSIDE_CONNECT_RSP, 0, st.id, Buffer.of(Result.OK)));
      const p = Buffer.alloc(4);
      p.writeUInt32BE(inc, 0);
      s.parse(encodeFrame(FrameType.WINDOW_UPDATE, 0, st.id, p));
      expect(closes[0]?.err?.code).toBe(ErrorCode.FLOW_CONTROL);
    }
  });

  it('setBlocked(true) makes write() return false; setBlocked(false) calls ondrain', () => {
    const { outside, inside, run } = pair({ inside: { onStream: (st) => inside.answer(st, Result.OK) } });
    const st = outside.open('h', 1);
    run();
    let drains = 0;
    st.ondrain = () => drains++;
    expect(st.write(Buffer.from('a'))).toBe(true);
    outside.setBlocked(true);
    expect(st.write(Buffer.from('b'))).toBe(false);
    expect(drains).toBe(0);
    outside.setBlocked(false);
    expect(drains).toBe(1);
    expect(st.write(Buffer.from('c'))).toBe(true);
  });
});

describe('session: half-close and reset', () => {
  it('a side that end()s still receives the whole reply', () => {
    const REPLY = 5 * 64 * 1024 + 123; // several windows: needs grants after our FIN
    const { outside, inside, run } = pair({
      outside: { window: 64 * 1024, maxFrame: 16 * 1024 },
      inside: {
        window: 64 * 1024,
        maxFrame: 16 * 1024,
        onStream: (st) => {
          inside.answer(st, Result.OK);
          const req: Buffer[] = [];
          st.ondata = (b) => { req.push(Buffer.from(b)); st.consumed(b.length); };
          st.onend = () => {
            // Only after the request's end: answer it in full, then end our side.
            expect(Buffer.concat(req).toString()).toBe('GET /');
            st.write(pattern(9, REPLY));
            st.end();
          };
        },
      },
    });
    const st = outside.open('h', 80);
    st.write(Buffer.from('GET /'));
    st.end();
    const reply: Buffer[] = [];
    let ended = false;
    st.ondata = (b) => { reply.push(Buffer.from(b)); st.consumed(b.length); };
    st.onend = () => { ended = true; };
    run();
    expect(st.localEnded).toBe(true);
    expect(ended).toBe(true);
    expect(Buffer.concat(reply).equals(pattern(9, REPLY))).toBe(true);
    expect(st.state).toBe('closed');
    expect(st.result).toBe(Result.OK);
    expect(outside.streamCount + inside.streamCount).toBe(0);
  });

  it('end() while the window is shut sends FIN only after the queued data', () => {
    const { outside, inside, run } = pair({
      outside: { window: 1024, maxFrame: 1024 },
      inside: { window: 1024, maxFrame: 1024, onStream: (st) => inside.answer(st, Result.OK) },
    });
    const st = outside.open('h', 1);
    st.write(pattern(1, 5000));
    st.end();
    run();
    const peer = inside.getStream(st.id)!;
    const got: Buffer[] = [];
    let ended = false;
    peer.ondata = (b) => { got.push(Buffer.from(b)); };
    peer.onend = () => { ended = true; };
    // Nothing consumed yet: no FIN may overtake the held data.
    expect(st.localEnded).toBe(false);
    for (let i = 0; i < 10 && !ended; i++) {
      peer.consumed(1024);
      run();
    }
    expect(ended).toBe(true);
    expect(Buffer.concat(got).length).toBe(5000 - 1024); // the first window arrived before ondata was set
  });

  it('reset propagates with its result code', () => {
    const { outside, inside, run } = pair({ inside: { onStream: (st) => inside.answer(st, Result.OK) } });
    const a = outside.open('h', 1);
    const b = outside.open('h', 2);
    run();
    const resets: Array<[string, number]> = [];
    inside.getStream(a.id)!.onreset = (r) => resets.push(['inside', r]);
    b.onreset = (r) => resets.push(['outside', r]);
    a.reset(Result.REFUSED_BY_RULE);
    inside.getStream(b.id)!.reset(Result.LINE_TOO_LONG);
    run();
    expect(resets.sort()).toEqual([['inside', Result.REFUSED_BY_RULE], ['outside', Result.LINE_TOO_LONG]]);
    expect(outside.streamCount + inside.streamCount).toBe(0);
  });

  it('a reset with result OK arrives as CANCELLED; a reset of a pending open reaches onopen', () => {
    const { outside, inside, run } = pair({ inside: { onStream: () => {} } });
    const a = outside.open('h', 1);
    let res = -1;
    a.onopen = (r) => { res = r; };
    run();
    inside.getStream(a.id)!.reset(Result.OK);
    run();
    expect(res).toBe(Result.CANCELLED);
  });

  it('data after the peer reset is dropped, not a protocol error', () => {
    const { outside, inside, run, closes } = pair({ inside: { onStream: (st) => inside.answer(st, Result.OK) } });
    const a = outside.open('h', 1);
    run();
    a.write(Buffer.alloc(1000));
    inside.getStream(a.id)!.reset(Result.CANCELLED); // crosses the DATA in flight
    run();
    expect(closes.inside).toHaveLength(0);
    expect(closes.outside).toHaveLength(0);
    expect(a.state).toBe('closed');
  });
});

describe('session: protocol violations end the session', () => {
  const goaway = (sent: Frame[]) => sent.find((f) => f.type === FrameType.GOAWAY)?.payload[0];

  it('unknown command → PS_ERR_UNKNOWN_COMMAND, GOAWAY UNKNOWN_COMMAND', () => {
    const { s, sent, closes } = lone('inside');
    s.established = true;
    const h = Buffer.alloc(12);
    h[0] = 0x99;
    s.parse(h);
    expect(closes[0].err?.code).toBe(ErrorCode.UNKNOWN_COMMAND);
    expect(goaway(sent)).toBe(Result.UNKNOWN_COMMAND);
  });

  it('oversized frame → PS_ERR_FRAME_TOO_LARGE, GOAWAY FRAME_TOO_LARGE', () => {
    const { s, sent, closes } = lone('inside', { maxFrame: 1024 });
    const h = Buffer.alloc(12);
    h[0] = FrameType.DATA;
    h.writeUInt32BE(1025, 8);
    s.parse(h);
    expect(closes[0].err?.code).toBe(ErrorCode.FRAME_TOO_LARGE);
    expect(goaway(sent)).toBe(Result.FRAME_TOO_LARGE);
  });

  it('a stream opened before the session is established → PS_ERR_PROTOCOL', () => {
    const { s, sent, closes } = lone('inside', { onStream: () => { throw new Error('must not be called'); } });
    s.parse(encodeFrame(FrameType.INSIDE_CONNECT_REQ, 0, 1, encodeAddress('t', 1)));
    expect(closes[0].err?.code).toBe(ErrorCode.PROTOCOL);
    expect(goaway(sent)).toBe(Result.PROTOCOL_ERROR);
  });

  it('wrong stream-id parity, stream 0, a reused id, or the wrong direction → PS_ERR_PROTOCOL', () => {
    const cases: Array<[('inside' | 'outside'), number, number]> = [
      ['inside', FrameType.INSIDE_CONNECT_REQ, 2], // the outside relay opens odd ids only
      ['inside', FrameType.INSIDE_CONNECT_REQ, 0],
      ['outside', FrameType.OUTSIDE_CONNECT_REQ, 3], // the inside relay opens even ids only
      ['outside', FrameType.INSIDE_CONNECT_REQ, 1], // an inside relay may not send inside-connect.req
    ];
    for (const [role, type, id] of cases) {
      const { s, closes } = lone(role, { onStream: (st) => s.answer(st, Result.OK) });
      s.established = true;
      s.parse(encodeFrame(type, 0, id, encodeAddress('t', 1)));
      expect(closes[0]?.err?.code, `${role} ${type} ${id}`).toBe(ErrorCode.PROTOCOL);
    }
    const { s, closes } = lone('inside', { onStream: (st) => s.answer(st, Result.OK) });
    s.established = true;
    s.parse(encodeFrame(FrameType.INSIDE_CONNECT_REQ, 0, 1, encodeAddress('t', 1)));
    expect(closes).toHaveLength(0);
    s.parse(encodeFrame(FrameType.INSIDE_CONNECT_REQ, 0, 1, encodeAddress('t', 1)));
    expect(closes[0]?.err?.code).toBe(ErrorCode.PROTOCOL);
  });

  it('a bad address or a bad response length → PS_ERR_MALFORMED_FRAME', () => {
    const a = lone('inside', { onStream: () => {} });
    a.s.established = true;
    a.s.parse(encodeFrame(FrameType.INSIDE_CONNECT_REQ, 0, 1, Buffer.of(0, 80, 9, 0x61)));
    expect(a.closes[0]?.err?.code).toBe(ErrorCode.MALFORMED_FRAME);
    const b = lone('outside');
    b.s.established = true;
    const st = b.s.open('h', 1);
    b.s.parse(encodeFrame(FrameType.INSIDE_CONNECT_RSP, 0, st.id, Buffer.of(0, 0)));
    expect(b.closes[0]?.err?.code).toBe(ErrorCode.MALFORMED_FRAME);
  });

  it('data on a stream the peer already ended → PS_ERR_PROTOCOL', () => {
    const { s, closes } = lone('inside', { onStream: (st) => s.answer(st, Result.OK) });
    s.established = true;
    s.parse(encodeFrame(FrameType.INSIDE_CONNECT_REQ, 0, 1, encodeAddress('t', 1)));
    s.parse(encodeFrame(FrameType.FIN, 0, 1));
    s.parse(encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(1)));
    expect(closes[0]?.err?.code).toBe(ErrorCode.PROTOCOL);
  });
});

describe('session: teardown, ping, go-away', () => {
  it('close() resets every stream with SESSION_CLOSED, pending opens included', () => {
    const { outside, inside, run, closes } = pair({ inside: { onStream: (st) => { if (st.port === 1) inside.answer(st, Result.OK); } } });
    const open = [outside.open('h', 1), outside.open('h', 1)];
    const pending = outside.open('h', 2);
    run();
    const got: number[] = [];
    for (const st of open) st.onreset = (r) => got.push(r);
    pending.onopen = (r) => got.push(r);
    outside.close(null);
    expect(got).toEqual([Result.SESSION_CLOSED, Result.SESSION_CLOSED, Result.SESSION_CLOSED]);
    expect(outside.streamCount).toBe(0);
    expect(closes.outside).toEqual([{ err: null, remote: null }]);
    expect(() => outside.open('h', 1)).toThrow(expect.objectContaining({ code: ErrorCode.SESSION_CLOSED }));
  });

  it('goAway tells the peer, whose streams are reset with SESSION_CLOSED', () => {
    const { outside, inside, run, closes } = pair({ inside: { onStream: (st) => inside.answer(st, Result.OK) } });
    const st = outside.open('h', 1);
    run();
    let peerReset = -1;
    inside.getStream(st.id)!.onreset = (r) => { peerReset = r; };
    outside.goAway(Result.SHUTDOWN, 'bye');
    run();
    expect(peerReset).toBe(Result.SESSION_CLOSED);
    expect(closes.inside).toEqual([{ err: null, remote: Result.SHUTDOWN }]);
    expect(inside.closed && outside.closed).toBe(true);
  });

  it('a GOAWAY with an error result reaches the peer as PS_ERR_GOAWAY with the reason', () => {
    const { outside, run, closes } = pair();
    outside.goAway(Result.AUTH_FAILED, 'wrong key');
    run();
    expect(closes.inside[0].remote).toBe(Result.AUTH_FAILED);
    expect(closes.inside[0].err?.code).toBe(ErrorCode.GOAWAY);
    expect(closes.inside[0].err?.message).toMatch(/AUTH_FAILED: wrong key/);
  });

  it('ping gets an ACK with the same payload', () => {
    const acks: Frame[] = [];
    const { outside, inside, run } = pair({ outside: { onControl: (f) => acks.push({ ...f, payload: Buffer.from(f.payload) }) } });
    const before = inside.lastReceived;
    outside.ping(Buffer.from('12345678'));
    run();
    expect(acks).toHaveLength(1);
    expect(acks[0].type).toBe(FrameType.PING);
    expect(acks[0].flags & Flag.ACK).toBe(Flag.ACK);
    expect(acks[0].payload.toString()).toBe('12345678');
    expect(inside.lastReceived).toBeGreaterThanOrEqual(before);
  });

  it('control frames the session does not handle go to onControl', () => {
    const ctl: Frame[] = [];
    const { outside, inside, run } = pair({ inside: { onControl: (f) => ctl.push({ ...f, payload: Buffer.from(f.payload) }) } });
    outside.sendControl(FrameType.INIT_ACK, 0, Buffer.from('{}'));
    outside.sendControl(FrameType.OUTSIDE_LISTEN_RSP, 4, Buffer.of(0));
    run();
    expect(ctl.map((f) => [f.type, f.stream, f.payload.toString('hex')])).toEqual([[FrameType.INIT_ACK, 0, '7b7d'], [FrameType.OUTSIDE_LISTEN_RSP, 4, '00']]);
    expect(inside.closed).toBe(false);
  });
});
