import net from 'node:net';

/** The outside relay's own policy: which listeners inside relays may open, and who may connect. */
export class AllowList {
  private readonly ranges: Array<[number, number]>;
  private readonly hosts: Set<string>;
  private readonly from = new net.BlockList();

  constructor(spec: { hosts: string[]; ports: Array<number | string>; from: string[] }) {
    this.hosts = new Set(spec.hosts);
    this.ranges = spec.ports.map((p) => {
      if (typeof p === 'number') return [p, p];
      const [a, b] = p.split('-').map(Number);
      return [a, b ?? a];
    });
    for (const f of spec.from) {
      const [addr, bits] = f.split('/');
      const fam = net.isIP(addr) === 6 ? 'ipv6' : 'ipv4';
      if (bits === undefined) this.from.addAddress(addr, fam);
      else this.from.addSubnet(addr, Number(bits), fam);
    }
  }

  listen(host: string, port: number): string | null {
    if (!this.hosts.has(host) && !this.hosts.has('*')) return `listen host ${host} is not in allow.hosts`;
    if (!this.ranges.some(([a, b]) => port >= a && port <= b)) return `port ${port} is not in allow.ports`;
    return null;
  }

  source(addr: string | undefined): boolean {
    if (!addr) return false;
    const a = addr.startsWith('::ffff:') ? addr.slice(7) : addr;
    return this.from.check(a, net.isIP(a) === 6 ? 'ipv6' : 'ipv4');
  }
}
