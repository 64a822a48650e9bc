// TCP echo server for tests, meant to run inside a network namespace. Each connection first gets
// `peer=<remote address>\n` (so a test can tell who dialled: the firewall, a relay, ...), then
// everything it sends is echoed. Prints {"event":"echo.listening","address","port"} when ready,
// and {"event":"echo.connection","peer","port"} per connection.
//
//   node test/harness/tcp-echo.mjs HOST PORT
import net from 'node:net';

const [host = '127.0.0.1', portArg = '0'] = process.argv.slice(2);
const server = net.createServer((s) => {
  process.stdout.write(JSON.stringify({ event: 'echo.connection', peer: s.remoteAddress, port: s.remotePort }) + '\n');
  s.on('error', () => {});
  s.write(`peer=${s.remoteAddress}\n`);
  s.pipe(s);
});
server.listen(Number(portArg), host, () => {
  const a = server.address();
  process.stdout.write(JSON.stringify({ event: 'echo.listening', address: a.address, port: a.port }) + '\n');
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
