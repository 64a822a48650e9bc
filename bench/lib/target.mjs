// The TCP target every path forwards to. Runs in its own process (never in a
// relay's, never in the bench's). The first byte a client sends picks a mode:
//   'S'  sink: an 8-byte BE length follows, then that many bytes; once all have
//        arrived, reply with the count (8 bytes BE). No reliance on half-close, so
//        every path (however it treats FIN) can carry it.
//   'T'  stall: never read from this connection (a stalled reader)
//   else echo everything, including that first byte
import net from 'node:net';

const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (sock) => {
  sock.setNoDelay(true);
  sock.on('error', () => sock.destroy());
  // A peer that closes before sending anything (a firewall's connect check, a probe) must not
  // leave us half-open, holding a descriptor for the rest of the run.
  const endEarly = () => sock.end();
  sock.once('end', endEarly);
  sock.once('data', (first) => {
    sock.off('end', endEarly);
    const mode = first[0];
    if (mode === 0x53 /* S */) {
      let head = first.subarray(1);
      let want = -1;
      let n = 0;
      const take = (d) => {
        if (want < 0) {
          head = Buffer.concat([head, d]);
          if (head.length < 8) return;
          want = Number(head.readBigUInt64BE(0));
          d = head.subarray(8);
        }
        n += d.length;
        if (n >= want) {
          const b = Buffer.alloc(8);
          b.writeBigUInt64BE(BigInt(n));
          sock.write(b);
        }
      };
      take(Buffer.alloc(0));
      sock.on('data', take);
    } else if (mode === 0x54 /* T */) {
      sock.pause(); // never resumed: the kernel buffers fill and the path must back off
    } else {
      sock.write(first);
      sock.pipe(sock);
      sock.on('end', () => sock.end());
    }
  });
});
server.maxConnections = 1e6;
server.listen(0, '127.0.0.1', 4096, () => {
  process.send({ port: server.address().port });
});
process.on('disconnect', () => process.exit(0));
