/** Reading rules files from disk (kept apart so the rest of src/rules stays free of I/O). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { parseRules } from './parser.js';
import type { RuleSet } from './types.js';

/** Load `<dir>/<name>.rules`. Throws RulesSyntaxError on bad content, ConfigError when unreadable. */
export function loadRules(dir: string, name: string): RuleSet {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw new ConfigError(`bad rules name '${name}'`);
  const file = join(dir, name.endsWith('.rules') ? name : `${name}.rules`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read rules file ${file}: ${(err as Error).message}`);
  }
  return parseRules(text, file);
}
