// IRC DCC, the second dynamic-port protocol, from rules/irc-dcc.rules alone, with real peers:
// Debian's ngircd on the intranet, real Dante as the firewall, both portside relays, and two
// scripted IRC clients. alice (internet) offers a file through portside; bob (an intranet host
// that is not the IRC server) receives it from the inside relay's address.
//
//   alice (client ns) ──> outside relay :6667 ══ session via danted ══> inside relay ──> ngircd (server ns)
//   bob (server ns, its own address) <── PRIVMSG with the inside relay's address ── ngircd
//   bob ──> inside relay's listener ══ session ══> outside relay ──> alice's DCC listener
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { bestTopology, type Topology } from '../harness/netns.js';
import { startDante, type Dante } from '../harness/dante.js';
import { startNgircd, startIrcClient, type IrcClient, type Ngircd } from '../harness/irc.js';
import { freePort, liveProcs, pidGone, runOk, stopAll, type Proc } from '../harness/procs.js';

const REPO = resolve(import.meta.dirname, '../..');
const CLI = join(REPO, 'dist/cli.js');
const FILE_SIZE = 4 * 1024 * 1024;

describe('IRC DCC through portside (rules/irc-dcc.rules, ngircd, Dante)', () => {
  let topo: Topology;
  let work: string;
  let dante: Dante;
  let ngircd: Ngircd;
  let outside: Proc;
  let inside: Proc;
  let alice: IrcClient;
  let bob: IrcClient;
  /** bob's own intranet address: deliberately not the IRC server's. */
  let bobAddr: string;
  let ircPort: number;
  let servicePort: number;
  const pids: number[] = [];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'ps-dcc-'));
    topo = await bestTopology('dcc');
    if (topo.isolated) {
      bobAddr = '10.201.2.30';
      await topo.run('server', 'ip', ['addr', 'add', `${bobAddr}/24`, 'dev', 'eth0']);
      ircPort = 6667;
      servicePort = 6667;
    } else {
      bobAddr = '127.0.0.2'; // all of 127/8 is local: still another address than the server's
      ircPort = await freePort();
      servicePort = await freePort();
    }
    const relayPort = topo.isolated ? 7000 : await freePort();

    dante = await startDante({ netns: topo.ns.firewall, internalAddress: topo.addr.fwInternal, externalAddress: topo.addr.fwExternal });
    ngircd = await startNgircd({ netns: topo.ns.server, address: topo.addr.server, port: ircPort });
    pids.push(dante.pid, ngircd.pid);

    const key = join(work, 'branch-a.key');
    await runOk(process.execPath, [CLI, 'keygen', '--out', key]);
    writeFileSync(join(work, 'outside.yaml'), [
      `listen: ${topo.addr.outside}:${relayPort}`,
      'insides:',
      '  - name: branch-a',
      `    key_file: ${key}`,
      'allow:',
      `  hosts: [${topo.addr.outside}]`,
      `  ports: ["${servicePort}"]`,
      `  from: ["${topo.nets.internet}"]`,
      'log_level: info',
      '',
    ].join('\n'));
    writeFileSync(join(work, 'inside.yaml'), [
      'name: branch-a',
      `key_file: ${key}`,
      `outside: ${topo.addr.outside}:${relayPort}`,
      'firewall:',
      `  socks5: ${dante.address}:${dante.port}`,
      'services:',
      '  - name: irc',
      `    listen: ${topo.addr.outside}:${servicePort}`,
      `    target: ${topo.addr.server}:${ircPort}`,
      '    rules: irc-dcc',
      `rules_dir: ${join(REPO, 'rules')}`,
      'log_level: info',
      '',
    ].join('\n'));
    outside = topo.spawn('outside', process.execPath, [CLI, 'outside', '--config', join(work, 'outside.yaml')], { name: 'portside-outside' });
    await outside.waitForEvent('outside.listening', 10_000);
    inside = topo.spawn('inside', process.execPath, [CLI, 'inside', '--config', join(work, 'inside.yaml')], { name: 'portside-inside' });
    await outside.waitForEvent('service.listening', 15_000, (e) => e.service === 'irc');
    await inside.waitForEvent('session.established', 15_000);
    pids.push(outside.pid, inside.pid);

    // bob first, so he is there when alice's offer arrives.
    bob = await startIrcClient({ netns: topo.ns.server, host: topo.addr.server, port: ircPort, nick: 'bob', bind: bobAddr });
    alice = await startIrcClient({ netns: topo.ns.client, host: topo.addr.outside, port: servicePort, nick: 'alice', bind: topo.addr.client });
    pids.push(bob.proc.pid, alice.proc.pid);
  }, 90_000);

  afterAll(async () => {
    await stopAll();
    await topo?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('carries alice IRC connection through the session and Dante to ngircd', async () => {
    const conn = await alice.wait('irc.connected');
    expect(conn.remote).toBe(topo.addr.outside); // alice only ever talks to the outside relay
    const bobConn = await bob.wait('irc.connected');
    expect(bobConn.local).toBe(bobAddr);
    expect(dante.log()).toMatch(/pass\(\d+\): tcp\/connect/);
    // ngircd sees alice coming from the inside relay's intranet address.
    alice.send({ op: 'say', to: 'bob', text: 'hello bob' });
    const hello = await bob.wait('irc.privmsg', (e) => e.text === 'hello bob');
    expect(hello.from).toBe('alice');
    expect(hello.host).toBe(topo.addr.inside);
  });

  it('rewrites a DCC SEND offer to the inside relay and carries a 4 MiB file to bob', async () => {
    alice.send({ op: 'offer', to: 'bob', name: 'file.bin', size: FILE_SIZE, listen: topo.addr.client });
    const listening = await alice.wait('dcc.listening', (e) => e.name === 'file.bin');
    expect(listening.host).toBe(topo.addr.client);
    const offer = await bob.wait('dcc.offer', (e) => e.name === 'file.bin', 20_000);
    expect(offer.from).toBe('alice');
    // bob is told the inside relay's intranet address, never alice's.
    expect(offer.ip).toBe(topo.addr.inside);
    if (topo.isolated) expect(offer.ip).not.toBe(topo.addr.client);
    expect(offer.size).toBe(FILE_SIZE);
    expect(typeof offer.port).toBe('number');

    bob.send({ op: 'get', host: offer.ip as string, port: offer.port as number, size: FILE_SIZE, bind: bobAddr });
    const got = await bob.wait('dcc.received', undefined, 60_000);
    const sent = await alice.wait('dcc.sent', (e) => e.name === 'file.bin', 60_000);
    expect(got.bytes).toBe(FILE_SIZE);
    expect(got.complete).toBe(true);
    expect(got.sha256).toBe(listening.sha256);
    expect(got.local).toBe(bobAddr);
    expect(sent.bytes).toBe(FILE_SIZE);
    // The connection to alice's listener came from the outside relay.
    const peer = await alice.wait('dcc.peer', (e) => e.name === 'file.bin');
    expect(peer.remote).toBe(topo.addr.outside);

    // What the relays did: the notice found, the outside relay connected to alice, the notice
    // rewritten, and bob (not the IRC server: accept-from any) accepted at the listener.
    const found = inside.events('notice.found');
    expect(found.some((e) => e.notice === 'DCC-SEND' && e.announced === `${topo.addr.client}:${listening.port}`)).toBe(true);
    expect(inside.events('notice.rewritten').some((e) => e.rewritten === `${topo.addr.inside}:${offer.port}`)).toBe(true);
    expect(outside.events('outside-connect.done').some((e) => e.target === `${topo.addr.client}:${listening.port}` && e.result === 'OK')).toBe(true);
    const accepted = inside.events('data.accepted');
    expect(accepted.some((e) => String(e.peer).startsWith(`${bobAddr}:`) && e.accept_from === 'any')).toBe(true);
    expect(bobAddr).not.toBe(topo.addr.server);
    expect(inside.events('data.refused')).toHaveLength(0);
  }, 90_000);

  it('refuses an offer naming another host than alice (bounce) and keeps the IRC connection working', async () => {
    const other = '10.201.1.99'; // not alice's address in either topology
    alice.send({ op: 'offer', to: 'bob', name: 'evil.bin', size: 1000, announce: other, port: 5000 });
    // `ESP part { check on }`: the outside relay may refuse it before it crosses the firewall;
    // otherwise the inside relay does. Either way it is logged with PS_ERR_RULE_REFUSED.
    const isOurs = (e: Record<string, unknown>) => String(e.announced ?? '').startsWith(`${other}:`) || String(e.reason ?? '').includes(other);
    const refused = await Promise.any([
      outside.waitForEvent('notice.refused', 10_000, isOurs),
      inside.waitForEvent('notice.refused', 10_000, isOurs),
    ]);
    expect(refused.code).toBe('PS_ERR_RULE_REFUSED');
    expect(refused.notice).toBe('DCC-SEND');
    expect(String(refused.reason)).toMatch(/bounce/);
    // Nothing was opened or rewritten for it.
    expect(outside.events('outside-connect.req').some((e) => String(e.target).startsWith(`${other}:`))).toBe(false);
    expect(inside.events('notice.rewritten')).toHaveLength(1);
    // IRC keeps order per connection: once the next line arrives, the refused offer was dropped.
    alice.send({ op: 'say', to: 'bob', text: 'after the refused offer' });
    await bob.wait('irc.privmsg', (e) => e.text === 'after the refused offer');
    expect(bob.events('dcc.offer').filter((e) => e.name === 'evil.bin')).toHaveLength(0);
    expect(bob.events('irc.privmsg').some((e) => String(e.text).includes('evil.bin'))).toBe(false);
    // Both ways still work.
    bob.send({ op: 'say', to: 'alice', text: 'still hear you' });
    const back = await alice.wait('irc.privmsg', (e) => e.text === 'still hear you');
    expect(back.from).toBe('bob');
    expect(alice.events('irc.closed')).toHaveLength(0);
    expect(inside.events('stream.closed').filter((e) => e.reason === 'server connection closed')).toHaveLength(0);
  }, 30_000);

  it('leaves no process and no namespace behind', async () => {
    await alice.stop();
    await bob.stop();
    await ngircd.stop();
    await dante.stop();
    await stopAll();
    expect(liveProcs()).toHaveLength(0);
    const names = Object.values(topo.ns).filter(Boolean) as string[];
    await topo.destroy();
    for (const pid of pids) expect(pidGone(pid), `pid ${pid}`).toBe(true);
    const list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const n of names) expect(list).not.toContain(n);
  });
});
