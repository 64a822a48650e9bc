import type { InsideConfig } from '../config.js';
import type { InsideRelay } from './inside.js';
import type { OutsideRelay } from './outside.js';

/** Dynamic ports (rules) attach here; filled in with the rules engine. */
export function attachDynamicInside(_relay: InsideRelay): void {}
export function attachDynamicOutside(_relay: OutsideRelay): void {}
export function checkRulesFiles(_cfg: InsideConfig): void {}
