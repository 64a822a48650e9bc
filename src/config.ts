import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isIP } from 'node:net';
import { LineCounter, parseDocument, isMap, isNode, isScalar } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { parseDestPattern } from './agent/match.js';

const validPattern = (s: string): boolean => {
  try { parseDestPattern(s); return true; } catch { return false; }
};

/**
 * Config files are YAML, checked by a schema. A bad file is refused with its name, the
 * line and column of the offending key, and what is wrong with it.
 */

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):\d{1,5}$/, 'expected HOST:PORT (IPv6 as [addr]:port)')
  .refine((s) => { const p = Number(s.slice(s.lastIndexOf(':') + 1)); return p >= 0 && p <= 65535; }, 'port must be 0-65535');
const key = z.string().min(1);
const level = z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info');
const portRange = z.union([z.number().int().min(1).max(65535), z.string().regex(/^\d{1,5}(-\d{1,5})?$/, 'expected PORT or LOW-HIGH')]);
const cidr = z.string().regex(/^[0-9a-fA-F:.]+(\/\d{1,3})?$/, 'expected an address or network in CIDR form');

export const limitsSchema = z.strictObject({
  handshake_timeout_ms: z.number().int().positive().default(10_000),
  max_pending_handshakes: z.number().int().positive().default(64),
  /** Outside relay: session handshakes one address may start per second, and may save up. */
  handshake_rate: z.number().positive().default(20),
  handshake_burst: z.number().int().positive().default(100),
  keepalive_interval_ms: z.number().int().positive().default(15_000),
  keepalive_timeout_ms: z.number().int().positive().default(45_000),
  connect_timeout_ms: z.number().int().positive().default(10_000),
  max_streams: z.number().int().positive().default(65_536),
  /** Carried connections (pipe.ts, Guard): no bytes for this long closes one; 0 never. */
  idle_timeout_ms: z.number().int().nonnegative().default(0),
  /** … once one direction has ended (a FIN the other side never answers). */
  half_close_timeout_ms: z.number().int().nonnegative().default(300_000),
  /** TCP keep-alive on carried sockets after this much idleness; 0 off. */
  tcp_keepalive_ms: z.number().int().nonnegative().default(60_000),
  /** Outside relay: a draining inside relay's service ports wait this long for its successor session (restart, reload); 0 closes them at once. */
  service_handover_ms: z.number().int().nonnegative().default(2_000),
  /** On SIGTERM/SIGINT: no new connections, and this long for the open ones to end (drain.ts); 0 cuts them at once. */
  shutdown_grace_ms: z.number().int().nonnegative().default(10_000),
}).prefault({});

/** The client port (docs/client.md): each agent holds one session here (own handshake and records, docs/protocol.md) and carries its connections over it. */
export const clientsSchema = z.strictObject({
  listen: hostPort,
  cert_file: z.string(),
  key_file: z.string(),
  auth: z.enum(['firewall', 'users']),
  firewall: z.strictObject({ socks5: hostPort }).optional(),
  users_file: z.string().optional(),
  allow: z.strictObject({ destinations: z.array(z.string().refine(validPattern, 'expected a CIDR, address or host pattern (optionally :PORT)')).optional() }).prefault({}),
  handshake_timeout_ms: z.number().int().positive().default(10_000),
  /** Connections one agent's session may carry at once. */
  max_streams: z.number().int().positive().default(65_536),
  /** Agent sessions (TLS connections to the client port) at once, handshaking or established. */
  max_sessions: z.number().int().positive().default(1024),
  /** Refused passwords one agent session may have before it is locked (sshd's MaxAuthTries). */
  max_auth_failures: z.number().int().positive().default(5),
  /** Handshakes one address may start per second, and how many it may save up (each costs a signature here). */
  handshake_rate: z.number().positive().default(20),
  handshake_burst: z.number().int().positive().default(100),
}).refine((v) => v.auth !== 'firewall' || !!v.firewall, { message: 'auth: firewall needs firewall.socks5', path: ['firewall'] })
  .refine((v) => v.auth !== 'users' || !!v.users_file, { message: 'auth: users needs users_file', path: ['users_file'] });

export const outsideSchema = z.strictObject({
  listen: hostPort,
  clients: clientsSchema.optional(),
  insides: z.array(z.strictObject({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'names are 1-64 of A-Z a-z 0-9 . _ -'),
    key: key.optional(),
    key_file: z.string().optional(),
  }).refine((v) => !!v.key !== !!v.key_file, 'give exactly one of key or key_file')).min(1),
  allow: z.strictObject({
    hosts: z.array(z.string()).default(['127.0.0.1']),
    ports: z.array(portRange).default(['1024-65535']),
    from: z.array(cidr).default(['0.0.0.0/0', '::/0']),
  }).prefault({}),
  limits: limitsSchema,
  log_level: level,
  /** Prometheus metrics at http://HOST:PORT/metrics (src/metrics.ts); off when absent. */
  metrics: hostPort.optional(),
});

const reachList = z.array(z.string().refine(validPattern, 'expected a CIDR, address or host pattern (optionally :PORT)'));

export const insideSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'names are 1-64 of A-Z a-z 0-9 . _ -'),
  key: key.optional(),
  key_file: z.string().optional(),
  outside: hostPort.optional(),
  /**
   * Several outside relays (patent claim 14, [0114]): a session to each, and a policy for each
   * set here, in one place: which services it opens and where its agents may reach.
   */
  outsides: z.array(z.strictObject({
    address: hostPort,
    /** Its own shared key (else the top-level one). */
    key: key.optional(),
    key_file: z.string().optional(),
    /** Names from `services` opened there (default: all). */
    services: z.array(z.string()).optional(),
    /** Where client agents of that outside relay may reach through us (default: the top-level `reach`). */
    reach: reachList.optional(),
  }).refine((v) => !(v.key && v.key_file), { message: 'give at most one of key or key_file', path: ['key'] })).min(1).optional(),
  firewall: z.strictObject({
    socks5: hostPort,
    username: z.string().min(1).max(255).optional(),
    password: z.string().max(255).optional(),
  }).optional(),
  services: z.array(z.strictObject({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/),
    listen: hostPort,
    target: hostPort,
    rules: z.string().optional(),
  })).default([]),
  /** Destinations (CIDR or host pattern) client agents may reach through this relay (docs/client.md). */
  reach: reachList.optional(),
  /** Rules files (names in rules_dir) for client agents' `reach` connections, by their initial port. */
  reach_rules: z.array(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected a rules file name (e.g. ftp)')).default([]),
  rules_dir: z.string().default('rules'),
  reconnect: z.strictObject({
    min_ms: z.number().int().positive().default(500),
    max_ms: z.number().int().positive().default(30_000),
  }).prefault({}),
  limits: limitsSchema,
  log_level: level,
  metrics: hostPort.optional(),
}).refine((v) => !(v.key && v.key_file), { message: 'give exactly one of key or key_file', path: ['key'] })
  .refine((v) => !!v.outside !== !!v.outsides, { message: 'give exactly one of outside (one outside relay) or outsides (several)', path: ['outside'] })
  .refine((v) => !!(v.key || v.key_file) || (!!v.outsides && v.outsides.every((o) => o.key || o.key_file)), { message: 'give exactly one of key or key_file (the key shared with the outside relay; with outsides, each may have its own)', path: ['key'] });

/** One outside relay an inside relay holds a session with, and the policy it pushes there. */
export interface OutsideTarget {
  address: string;
  sharedKey: Buffer;
  /** Where the key was read from: its key file, or the config file itself (`key:`). */
  keyFrom: string;
  services: string[];
  reach: string[] | undefined;
}

export type OutsideConfig = z.infer<typeof outsideSchema> & { file: string; keys: Map<string, Buffer> };
/** What one InsideRelay runs with: one outside relay (`outside`, `sharedKey`) and the policy for it. */
export type InsideConfig = Omit<z.infer<typeof insideSchema>, 'outside' | 'outsides'> & { file: string; outside: string; sharedKey: Buffer };
/** An inside config file as loaded: every outside relay it names (insideRelayConfigs() splits it); `outside` is the first. */
export type LoadedInsideConfig = InsideConfig & { outsides: OutsideTarget[] };

export function splitHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  let host = s.slice(0, i);
  if (host.startsWith('[')) host = host.slice(1, -1);
  return { host, port: Number(s.slice(i + 1)) };
}

export function joinHostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Parse YAML text against a schema; errors name file:line:column and the key. */
export function parseConfigText<T extends z.ZodType>(schema: T, text: string, file: string): z.infer<T> {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length) {
    const e = doc.errors[0];
    const pos = lc.linePos(e.pos[0]);
    throw new ConfigError(`${file}:${pos.line}:${pos.col}: ${e.message.split('\n')[0]}`);
  }
  const r = schema.safeParse(doc.toJS() ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  let message = issue.message;
  const path = issue.path as (string | number)[];
  // Point at the deepest node that exists on the path (the key itself when it is there).
  let line = 1;
  let col = 1;
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) {
      const pos = lc.linePos(node.range[0]);
      line = pos.line;
      col = pos.col;
      break;
    }
  }
  if (issue.code === 'unrecognized_keys') {
    // Point at the unknown key itself, not at the map that holds it.
    const map = path.length ? doc.getIn(path, true) : doc.contents;
    const name = (issue as { keys: string[] }).keys[0];
    const pair = isMap(map) ? map.items.find((p) => isScalar(p.key) && p.key.value === name) : undefined;
    if (pair && isNode(pair.key) && pair.key.range) ({ line, col } = lc.linePos(pair.key.range[0]));
  }
  if (issue.code === 'invalid_type' && /received undefined/.test(issue.message)) message = 'missing required key';
  const where = path.length ? path.join('.') : '(top level)';
  if (issue.code === 'unrecognized_keys') message = `unknown key ${(issue as { keys: string[] }).keys.map((k) => `'${k}'`).join(', ')}`;
  throw new ConfigError(`${file}:${line}:${col}: ${where}: ${message}`);
}

/**
 * `file:line:col: a.b.c` for a key path in a config's text: for checks made after the schema
 * (files named in it, duplicates), so they point at their line too.
 */
export function configPlace(file: string, text: string, path: (string | number)[]): string {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  for (let n = path.length; n > 0; n--) {
    const node = doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) {
      const { line, col } = lc.linePos(node.range[0]);
      return `${file}:${line}:${col}: ${path.join('.')}`;
    }
  }
  return `${file}: ${path.join('.')}`;
}

/** A relay's shared key, from `key` or `key_file`; `place` names the config line for errors. */
export function readKey(spec: { key?: string; key_file?: string }, baseDir: string, place: (key: string) => string): Buffer {
  let text: string;
  if (spec.key) text = spec.key;
  else {
    const p = resolve(baseDir, spec.key_file!);
    try {
      text = readFileSync(p, 'utf8');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const hint = e.code === 'ENOENT' ? ` (make one with \`portside keygen --out ${spec.key_file}\`, and copy it to the other relay)` : '';
      throw new ConfigError(`${place('key_file')}: cannot read ${p}: ${e.code ?? e.message}${hint}`);
    }
  }
  const buf = Buffer.from(text.trim(), 'base64');
  if (buf.length < 16) throw new ConfigError(`${place(spec.key ? 'key' : 'key_file')}: the key must be at least 16 bytes of base64 (make one with \`portside keygen\`)`);
  return buf;
}

/** Read a config file; a missing or unreadable file is a config error, not a crash. */
export function readConfigFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export function loadOutsideConfig(file: string, text = readConfigFile(file)): OutsideConfig {
  const c = parseConfigText(outsideSchema, text, file);
  const keys = new Map<string, Buffer>();
  c.insides.forEach((i, n) => {
    if (keys.has(i.name)) throw new ConfigError(`${configPlace(file, text, ['insides', n, 'name'])}: inside relay '${i.name}' listed twice`);
    keys.set(i.name, readKey(i, dirname(file), (k) => configPlace(file, text, ['insides', n, k])));
  });
  return { ...c, file, keys };
}

export function loadInsideConfig(file: string, text = readConfigFile(file)): LoadedInsideConfig {
  const { outside, outsides, ...c } = parseConfigText(insideSchema, text, file);
  const seen = new Set<string>();
  c.services.forEach((s, n) => {
    if (seen.has(s.name)) throw new ConfigError(`${configPlace(file, text, ['services', n, 'name'])}: service '${s.name}' defined twice`);
    seen.add(s.name);
  });
  const topKey = c.key || c.key_file ? readKey(c, dirname(file), (k) => configPlace(file, text, [k])) : null;
  const keyFrom = (spec: { key?: string; key_file?: string }) => (spec.key_file ? resolve(dirname(file), spec.key_file) : file);
  const all = c.services.map((s) => s.name);
  const targets: OutsideTarget[] = outside
    ? [{ address: outside, sharedKey: topKey!, keyFrom: keyFrom(c), services: all, reach: c.reach }]
    : outsides!.map((o, n) => {
      const place = (k: (string | number)[]) => configPlace(file, text, ['outsides', n, ...k]);
      (o.services ?? []).forEach((name, i) => {
        if (!seen.has(name)) throw new ConfigError(`${place(['services', i])}: no service named '${name}' in services`);
      });
      const own = !!(o.key || o.key_file);
      const sharedKey = own ? readKey(o, dirname(file), (k) => place([k])) : topKey!;
      return { address: o.address, sharedKey, keyFrom: keyFrom(own ? o : c), services: o.services ?? all, reach: o.reach ?? c.reach };
    });
  const addresses = new Set<string>();
  targets.forEach((t, n) => {
    if (addresses.has(t.address)) throw new ConfigError(`${configPlace(file, text, ['outsides', n, 'address'])}: outside relay ${t.address} listed twice`);
    addresses.add(t.address);
  });
  return { ...c, file, outside: targets[0]!.address, sharedKey: targets[0]!.sharedKey, outsides: targets, rules_dir: resolve(dirname(file), c.rules_dir) };
}

/** One config per outside relay (claim 14): its address and key, the services and reach it gets. */
export function insideRelayConfigs(cfg: LoadedInsideConfig): InsideConfig[] {
  const { outsides, ...base } = cfg;
  return outsides.map((t) => ({
    ...base,
    outside: t.address,
    sharedKey: t.sharedKey,
    services: cfg.services.filter((s) => t.services.includes(s.name)),
    reach: t.reach,
  }));
}

/** `portside check`: which kind of file is it? Decided by its keys. */
export function detectConfigKind(text: string): 'inside' | 'outside' | 'client' | 'unknown' {
  const doc = parseDocument(text);
  const js = doc.toJS();
  if (js && typeof js === 'object') {
    if ('insides' in js) return 'outside';
    if ('outside_fingerprint' in js) return 'client';
    if ('outside' in js || 'outsides' in js) return 'inside';
  }
  return 'unknown';
}
