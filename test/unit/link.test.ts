// The glue between a session and its transport socket (src/relay/link.ts).
import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { ErrorCode, type PortsideError } from '../../src/errors.js';
import { sessionOverSocket } from '../../src/relay/link.js';

describe('sessionOverSocket', () => {
  it("the peer's FIN ends the session, also on a socket made with allowHalfOpen (as one dialled through a SOCKS5 firewall is)", async () => {
    const server = net.createServer({ allowHalfOpen: true });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
    const sock = net.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, allowHalfOpen: true });
    await new Promise((r) => sock.once('connect', r));
    const closed = new Promise<PortsideError | null>((resolve) => {
      sessionOverSocket(sock, { role: 'inside', onClose: (err) => resolve(err) }, { intervalMs: 60_000, timeoutMs: 120_000 });
    });
    (await accepted).end(); // FIN only: the peer keeps its side open
    const err = await closed;
    expect(err?.code).toBe(ErrorCode.SESSION_CLOSED);
    expect(sock.destroyed).toBe(true);
    server.close();
  });
});
