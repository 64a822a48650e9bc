/**
 * Files that hold secrets (shared keys, the client port's private key, the users file, a config
 * with a key or password written in it): a relay or agent warns at start when others may read
 * one, as ssh does for private keys (it refuses; a warning keeps read-only mounted secrets working).
 */
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { LoadedInsideConfig, OutsideConfig } from './config.js';
import type { ClientConfig } from './agent/config.js';
import type { Logger } from './log.js';

export function outsideSecrets(c: OutsideConfig): string[] {
  const dir = dirname(c.file);
  const files = c.insides.map((i) => (i.key_file ? resolve(dir, i.key_file) : c.file));
  if (c.clients) {
    files.push(resolve(dir, c.clients.key_file));
    if (c.clients.users_file) files.push(resolve(dir, c.clients.users_file));
  }
  return [...new Set(files)];
}

export function insideSecrets(c: LoadedInsideConfig): string[] {
  const files = c.outsides.map((o) => o.keyFrom);
  if (c.firewall?.password !== undefined) files.push(c.file);
  return [...new Set(files)];
}

export function clientSecrets(c: ClientConfig): string[] {
  return c.passwordInFile || c.firewall?.password !== undefined ? [c.file] : [];
}

/** Warn (event config.secret_readable) for each file whose mode lets group or others read it. */
export function warnReadableSecrets(files: string[], log: Logger): void {
  for (const file of files) {
    let mode: number;
    try {
      mode = statSync(file).mode & 0o777;
    } catch {
      continue; // read already, or reported by whoever reads it
    }
    if ((mode & 0o077) === 0) continue;
    const m = `0${mode.toString(8)}`;
    log.warn({ event: 'config.secret_readable', file, mode: m }, `${file} holds a secret and others may read it (mode ${m}): chmod 600 ${file}`);
  }
}
