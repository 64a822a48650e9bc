import { z } from 'zod';
import { ProtocolError } from '../errors.js';

/**
 * Initialisation data (patent Fig. 8, claims 4 and 15): the policy the inside relay sets
 * and pushes to the outside relay over the encrypted session. JSON in an INIT frame.
 */
export const initSchema = z.strictObject({
  v: z.literal(1),
  name: z.string().max(64),
  services: z.array(z.strictObject({
    name: z.string().max(64),
    listen: z.object({ host: z.string().max(255), port: z.number().int().min(0).max(65535) }),
    target: z.object({ host: z.string().max(255), port: z.number().int().min(1).max(65535) }),
    rules: z.string().max(64).optional(),
  })).max(1024),
  /** What the outside relay needs of each rules file (docs/rules.md). */
  rules: z.record(z.string(), z.unknown()).default({}),
  /** Destinations client agents may reach through this inside relay (docs/client.md). */
  reach: z.array(z.string().max(300)).max(1024).optional(),
});
export type InitData = z.infer<typeof initSchema>;

export const initAckSchema = z.strictObject({
  services: z.array(z.strictObject({
    name: z.string(),
    ok: z.boolean(),
    host: z.string().optional(),
    port: z.number().optional(),
    code: z.string().optional(),
    error: z.string().optional(),
  })),
});
export type InitAck = z.infer<typeof initAckSchema>;

export function encodeJson(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v), 'utf8');
}

export function decodeJson<T extends z.ZodType>(schema: T, payload: Buffer, what: string): z.infer<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new ProtocolError(`${what} is not valid JSON`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new ProtocolError(`${what} is invalid: ${r.error.issues[0].path.join('.')}: ${r.error.issues[0].message}`);
  return r.data;
}
