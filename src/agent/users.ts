/**
 * The outside relay's own user list, for `clients.auth: users` (no firewall to authenticate
 * users, e.g. a packet filter). One line per user: `name:scrypt$N$r$p$salt$hash` (salt and hash
 * base64), made by `portside passwd NAME`. Verified with scrypt and timingSafeEqual; a verified
 * password is remembered (as an HMAC under a per-process key) so that every carried connection
 * does not cost a full scrypt.
 */
import { createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';

const KEYLEN = 32;
export const SCRYPT_DEFAULT = { N: 16384, r: 8, p: 1 };

function scryptAsync(password: string, salt: Buffer, N: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, KEYLEN, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** One users-file line for name and password. */
export async function hashUserLine(name: string, password: string, params = SCRYPT_DEFAULT): Promise<string> {
  if (!/^[^:\s]{1,255}$/.test(name)) throw new ConfigError(`user name '${name}' must be 1-255 characters without ':' or spaces`);
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, params.N, params.r, params.p);
  return `${name}:scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

interface Entry { N: number; r: number; p: number; salt: Buffer; hash: Buffer }

export function parseUsers(text: string, file: string): Map<string, Entry> {
  const users = new Map<string, Entry>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const m = /^([^:\s]+):scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(line);
    if (!m) throw new ConfigError(`${file}:${i + 1}: expected name:scrypt$N$r$p$salt$hash (make lines with \`portside passwd NAME\`)`);
    const [N, r, p] = [Number(m[2]), Number(m[3]), Number(m[4])];
    if (N < 2 || (N & (N - 1)) !== 0 || N > 2 ** 20 || r < 1 || r > 32 || p < 1 || p > 16) throw new ConfigError(`${file}:${i + 1}: scrypt parameters out of range`);
    if (users.has(m[1]!)) throw new ConfigError(`${file}:${i + 1}: user '${m[1]}' listed twice`);
    users.set(m[1]!, { N, r, p, salt: Buffer.from(m[5]!, 'base64'), hash: Buffer.from(m[6]!, 'base64') });
  });
  return users;
}

export class UserFile {
  private users: Map<string, Entry>;
  private readonly cacheKey = randomBytes(32);
  /** name → HMAC(password) of the last password verified for that name. */
  private readonly verified = new Map<string, Buffer>();
  /** A fixed entry to hash against for unknown names, so they take as long as known ones. */
  private readonly dummy: Entry = { ...SCRYPT_DEFAULT, salt: randomBytes(16), hash: randomBytes(KEYLEN) };

  constructor(readonly file: string, text?: string) {
    this.users = parseUsers(text ?? readFileSync(file, 'utf8'), file);
  }

  get size(): number {
    return this.users.size;
  }

  /**
   * Read the file again (users added, removed or given new passwords by `portside passwd`). The
   * new table replaces the old one only if the whole file parses; otherwise the old one stays and
   * the error is thrown. Passwords verified before are verified again under the new table.
   */
  reload(text = readFileSync(this.file, 'utf8')): void {
    this.users = parseUsers(text, this.file);
    this.verified.clear();
  }

  async verify(name: string, password: string): Promise<boolean> {
    const mac = createHmac('sha256', this.cacheKey).update(name).update('\0').update(password).digest();
    const seen = this.verified.get(name);
    if (seen && timingSafeEqual(seen, mac)) return true;
    const e = this.users.get(name);
    const use = e ?? this.dummy;
    const key = await scryptAsync(password, use.salt, use.N, use.r, use.p);
    const ok = !!e && key.length === e.hash.length && timingSafeEqual(key, e.hash);
    if (ok) {
      if (this.verified.size > 10_000) this.verified.clear();
      this.verified.set(name, mac);
    }
    return ok;
  }
}
