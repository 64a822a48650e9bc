import net from 'node:net';

/**
 * A small SOCKS5 gateway (RFC 1928 CONNECT, RFC 1929 username/password). It stands in for
 * the firewall in `npm run demo` only; the tests use real Dante.
 */
export interface Socks5ServerOptions {
  users?: Map<string, string>;
  /** Called for each CONNECT; return false to refuse it (rule set says no). */
  allow?: (host: string, port: number) => boolean;
  onEvent?: (e: { event: string; host?: string; port?: number; user?: string; reason?: string }) => void;
}

export function createSocks5Server(opts: Socks5ServerOptions = {}): net.Server {
  return net.createServer({ noDelay: true }, (sock) => {
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    let stage: 'greet' | 'auth' | 'request' = 'greet';
    const need = (n: number) => buf.length >= n;
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length > 1024) return sock.destroy();
      if (stage === 'greet') {
        if (!need(2) || !need(2 + buf[1])) return;
        if (buf[0] !== 5) return sock.destroy();
        const methods = buf.subarray(2, 2 + buf[1]);
        buf = buf.subarray(2 + methods.length);
        const want = opts.users ? 0x02 : 0x00;
        if (!methods.includes(want)) { sock.end(Buffer.of(5, 0xff)); return; }
        sock.write(Buffer.of(5, want));
        stage = opts.users ? 'auth' : 'request';
      }
      if (stage === 'auth') {
        if (!need(2) || !need(3 + buf[1]) || !need(3 + buf[1] + buf[2 + buf[1]])) return;
        const ul = buf[1];
        const user = buf.toString('utf8', 2, 2 + ul);
        const pl = buf[2 + ul];
        const pass = buf.toString('utf8', 3 + ul, 3 + ul + pl);
        buf = buf.subarray(3 + ul + pl);
        if (opts.users?.get(user) !== pass) {
          opts.onEvent?.({ event: 'auth.refused', user });
          sock.end(Buffer.of(1, 1));
          return;
        }
        opts.onEvent?.({ event: 'auth.ok', user });
        sock.write(Buffer.of(1, 0));
        stage = 'request';
      }
      if (stage === 'request') {
        if (!need(5)) return;
        const atyp = buf[3];
        let host: string;
        let off: number;
        if (atyp === 1) { if (!need(10)) return; host = [...buf.subarray(4, 8)].join('.'); off = 8; }
        else if (atyp === 3) { if (!need(7 + buf[4])) return; host = buf.toString('utf8', 5, 5 + buf[4]); off = 5 + buf[4]; }
        else if (atyp === 4) {
          if (!need(22)) return;
          const h = buf.subarray(4, 20);
          host = Array.from({ length: 8 }, (_, i) => h.readUInt16BE(i * 2).toString(16)).join(':');
          off = 20;
        } else return sock.destroy();
        const port = buf.readUInt16BE(off);
        const rest = buf.subarray(off + 2);
        sock.off('data', onData);
        if (buf[1] !== 1) { sock.end(Buffer.of(5, 7, 0, 1, 0, 0, 0, 0, 0, 0)); return; }
        if (opts.allow && !opts.allow(host, port)) {
          opts.onEvent?.({ event: 'connect.refused', host, port });
          sock.end(Buffer.of(5, 2, 0, 1, 0, 0, 0, 0, 0, 0));
          return;
        }
        const up = net.connect({ host, port, noDelay: true });
        up.on('error', () => { sock.end(Buffer.of(5, 5, 0, 1, 0, 0, 0, 0, 0, 0)); });
        up.on('connect', () => {
          opts.onEvent?.({ event: 'connect', host, port });
          const reply = Buffer.of(5, 0, 0, 1, 0, 0, 0, 0, 0, 0);
          reply.writeUInt16BE(up.localPort ?? 0, 8);
          sock.write(reply);
          if (rest.length) up.write(rest);
          sock.pipe(up);
          up.pipe(sock);
          up.on('error', () => sock.destroy());
          sock.on('error', () => up.destroy());
          sock.on('close', () => up.destroy());
          up.on('close', () => sock.destroy());
        });
      }
    };
    sock.on('data', onData);
  });
}
