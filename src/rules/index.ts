/** The rules language: parse, compile, inspect (pure: no sockets). loadRules lives in ./load.js. */
export { parseRules } from './parser.js';
export { serializeForOutside, ruleSetFromInit, compileRuleSet, DEFAULT_POLICY, LIMITS } from './compile.js';
export { Inspector, checkBounce } from './inspector.js';
export type { Notice, InspectItem, InspectorOptions, Refusal } from './inspector.js';
export { FORMAT_NAMES, parseAddress, renderAddress } from './formats.js';
export type { FormatName, ParsedAddress } from './formats.js';
export { canonicalIp, ipFamily } from './ip.js';
export type * from './types.js';
