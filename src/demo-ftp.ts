import type { InsideRelay } from './relay/inside.js';
import type { OutsideRelay } from './relay/outside.js';

/** FTP through the relays: filled in with dynamic ports. */
export async function runFtpDemo(_inside: InsideRelay, _outside: OutsideRelay): Promise<void> {}
