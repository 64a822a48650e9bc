/** `portside client` config (docs/client.md). */
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { parseConfigText, readConfigFile } from '../config.js';
import { normalizeFingerprint } from './cert.js';
import { parseDestPattern, type Route } from './match.js';

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):\d{1,5}$/, 'expected HOST:PORT (IPv6 as [addr]:port)');
const pattern = z.string().refine((s) => { try { parseDestPattern(s); return true; } catch { return false; } }, 'expected a CIDR, address or host pattern, optionally :PORT or :LOW-HIGH');
const fingerprint = z.string().refine((s) => { try { normalizeFingerprint(s); return true; } catch { return false; } }, 'expected a SHA-256 fingerprint (64 hex digits, colons allowed), as printed by `portside keygen --cert`');

/** A listen address only this machine can reach: localhost, 127.0.0.0/8 or ::1. */
export function isLoopbackListen(hp: string): boolean {
  const host = hp.slice(0, hp.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

const REMOTE = 'is not a loopback address: whoever reaches it connects as this agent\'s user. Listen on 127.0.0.1, or set allow_remote: true';

export const clientSchema = z.strictObject({
  /** The outside relay's client port. */
  outside: hostPort,
  outside_fingerprint: fingerprint,
  username: z.string().min(1).max(255),
  /** Or the environment variable PORTSIDE_PASSWORD. */
  password: z.string().max(255).optional(),
  /** Local SOCKS5 server (CONNECT, no authentication) for programs that can use a proxy. */
  socks5: hostPort.optional(),
  forwards: z.array(z.strictObject({ listen: hostPort, to: hostPort })).default([]),
  /**
   * Let socks5 and forwards listen on addresses other than loopback (as ssh's GatewayPorts):
   * neither asks who connects, and every connection carries this agent's user.
   */
  allow_remote: z.boolean().default(false),
  /** Per destination (claim 12): first match wins; no match = portside. */
  routes: z.array(z.strictObject({ match: pattern, via: z.enum(['portside', 'firewall', 'direct']) })).default([]),
  /** The firewall's SOCKS5, for routes with via: firewall. */
  firewall: z.strictObject({
    socks5: hostPort,
    username: z.string().min(1).max(255).optional(),
    password: z.string().max(255).optional(),
  }).optional(),
  /**
   * Back-connect port for active-mode dynamic ports (FTP PORT/EPRT): the outside relay connects
   * here over TLS and we connect on to the program's own listener. `off` refuses active mode.
   */
  back_listen: z.union([hostPort, z.literal('off')]).default('0.0.0.0:0'),
  connect_timeout_ms: z.number().int().positive().default(15_000),
  /** On SIGTERM/SIGINT: no new connections, and this long for the open ones to end; 0 cuts them at once. */
  shutdown_grace_ms: z.number().int().nonnegative().default(10_000),
  log_level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  /** Prometheus metrics at http://HOST:PORT/metrics; off when absent. */
  metrics: hostPort.optional(),
}).refine((v) => !v.routes.some((r) => r.via === 'firewall') || !!v.firewall, { message: 'a route with via: firewall needs firewall.socks5', path: ['firewall'] })
  .superRefine((v, ctx) => {
    if (v.allow_remote) return;
    if (v.socks5 && !isLoopbackListen(v.socks5)) ctx.addIssue({ code: 'custom', message: `${v.socks5} ${REMOTE}`, path: ['socks5'] });
    v.forwards.forEach((f, i) => {
      if (!isLoopbackListen(f.listen)) ctx.addIssue({ code: 'custom', message: `${f.listen} ${REMOTE}`, path: ['forwards', i, 'listen'] });
    });
  });

export type ClientConfig = Omit<z.infer<typeof clientSchema>, 'routes'> & { file: string; password: string; passwordInFile: boolean; fingerprint: string; routes: Route[] };

export function loadClientConfig(file: string, text = readConfigFile(file), env = process.env): ClientConfig {
  const c = parseConfigText(clientSchema, text, file);
  const password = c.password ?? env.PORTSIDE_PASSWORD;
  if (password === undefined) throw new ConfigError(`${file}: give password: or set PORTSIDE_PASSWORD`);
  return {
    ...c,
    file,
    password,
    passwordInFile: c.password !== undefined,
    fingerprint: normalizeFingerprint(c.outside_fingerprint),
    routes: c.routes.map((r) => ({ match: parseDestPattern(r.match), via: r.via })),
  };
}
