// `npm run demo`, tried as a new user would: the whole topology on one machine, every step shown.
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { join } from 'node:path';

const REPO = join(import.meta.dirname, '..', '..');

describe('npm run demo', () => {
  it('carries data, FTP in four modes and a client agent connection, and narrates the patent steps', async () => {
    const r = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile(process.execPath, [join(REPO, 'dist', 'demo.js')], { cwd: REPO, timeout: 90_000, maxBuffer: 8 << 20, env: { ...process.env, NO_COLOR: '1' } },
        (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }));
    });
    expect(r.out).toContain('demo finished');
    expect(r.code).toBe(0);
    expect(r.out).not.toMatch(/FAILED|MISMATCH/);
    for (const step of ['(Fig. 9, claim 10)', '(608)', '(609-610)', '(616)', '(623)', '(617-618)', '(603-606)', '(607, 611)', '(607, 612)']) expect(r.out).toContain(step);
    expect(r.out.match(/SHA-256 matches/g)?.length).toBe(5); // four FTP modes and curl through the agent
    expect(r.out).toContain('reply matches: SHA-256');
  });
});
