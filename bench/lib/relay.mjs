// Plain one-hop Node relay (baseline): net + pipe() both ways, Nagle off.
// Usage: node relay.mjs TARGET_PORT ; prints {"port":N} when listening.
import net from 'node:net';

const targetPort = Number(process.argv[2]);
const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (a) => {
  a.setNoDelay(true);
  const b = net.connect({ port: targetPort, host: '127.0.0.1', noDelay: true, allowHalfOpen: true });
  const kill = () => { a.destroy(); b.destroy(); };
  a.on('error', kill);
  b.on('error', kill);
  a.pipe(b);
  b.pipe(a);
});
server.listen(0, '127.0.0.1', 4096, () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
