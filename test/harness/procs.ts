// Child-process helpers for end-to-end tests: spawn (optionally inside a network namespace),
// capture output line by line, wait for log events, stop by PID, and kill leftovers on exit.
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';

export interface LogLine {
  stream: 'stdout' | 'stderr';
  raw: string;
  /** Parsed JSON object when the line is one (pino logs), else undefined. */
  json?: Record<string, unknown>;
}

export interface SpawnOptions {
  /** Run inside this network namespace (`ip netns exec NS ...`). */
  netns?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Label used in error messages. */
  name?: string;
  /** Keep stdin open as a pipe (default: ignored). */
  stdin?: boolean;
  /** Lines kept in memory (oldest dropped first). */
  maxLines?: number;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Wrap a command so it runs inside `netns` (no-op without one). */
export function wrapNetns(netns: string | undefined, cmd: string, args: readonly string[]): { cmd: string; args: string[] } {
  if (!netns) return { cmd, args: [...args] };
  return { cmd: 'ip', args: ['netns', 'exec', netns, cmd, ...args] };
}

const live = new Set<Proc>();

type Waiter = { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void; reject: (e: Error) => void; timer: NodeJS.Timeout };

export class Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly name: string;
  readonly lines: LogLine[] = [];
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<ExitInfo>;
  exitInfo: ExitInfo | undefined;
  /** Resolves when the leader process itself exited (its forks may still hold the pipes). */
  readonly leaderExited: Promise<void>;
  private leaderRunning = true;
  private waiters = new Set<Waiter>();
  private partial: Record<'stdout' | 'stderr', string> = { stdout: '', stderr: '' };
  private readonly maxLines: number;

  constructor(cmd: string, args: readonly string[], opts: SpawnOptions = {}) {
    const w = wrapNetns(opts.netns, cmd, args);
    this.name = opts.name ?? `${cmd}${opts.netns ? `@${opts.netns}` : ''}`;
    this.maxLines = opts.maxLines ?? 20_000;
    // detached: the child leads its own process group, so stop() can also reach its forks
    // (danted, vsftpd). `ip netns exec` execs the command, so the PID is the command's own.
    this.child = spawn(w.cmd, w.args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      detached: true,
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    if (this.child.pid === undefined) {
      // spawn failures (ENOENT) surface asynchronously as 'error'; make them synchronous here.
      throw new Error(`failed to spawn ${w.cmd} ${w.args.join(' ')}`);
    }
    this.pid = this.child.pid;
    live.add(this);
    this.exited = new Promise<ExitInfo>((resolve) => {
      this.child.once('close', (code, signal) => {
        this.flush();
        this.exitInfo = { code, signal };
        live.delete(this);
        for (const w of this.waiters) {
          clearTimeout(w.timer);
          w.reject(new Error(`${this.name} exited (code ${code}, signal ${signal}) before the awaited line\n${this.tail()}`));
        }
        this.waiters.clear();
        resolve(this.exitInfo);
      });
    });
    this.leaderExited = new Promise<void>((resolve) => {
      this.child.once('exit', () => {
        this.leaderRunning = false;
        resolve();
      });
    });
    this.child.on('error', () => {
      /* reported through 'exit' */
    });
    for (const stream of ['stdout', 'stderr'] as const) {
      this.child[stream]!.setEncoding('utf8');
      this.child[stream]!.on('data', (chunk: string) => this.onData(stream, chunk));
    }
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  private onData(stream: 'stdout' | 'stderr', chunk: string): void {
    const text = this.partial[stream] + chunk;
    const parts = text.split('\n');
    this.partial[stream] = parts.pop() ?? '';
    for (const p of parts) this.addLine(stream, p);
  }

  private flush(): void {
    for (const stream of ['stdout', 'stderr'] as const) {
      if (this.partial[stream]) this.addLine(stream, this.partial[stream]);
      this.partial[stream] = '';
    }
  }

  private addLine(stream: 'stdout' | 'stderr', raw: string): void {
    const line: LogLine = { stream, raw };
    const t = raw.trim();
    if (t.startsWith('{')) {
      try {
        const v: unknown = JSON.parse(t);
        if (v && typeof v === 'object' && !Array.isArray(v)) line.json = v as Record<string, unknown>;
      } catch {
        /* not JSON: keep raw only */
      }
    }
    this.lines.push(line);
    if (this.lines.length > this.maxLines) this.lines.splice(0, this.lines.length - this.maxLines);
    for (const w of this.waiters) {
      if (safePred(w.pred, line)) {
        clearTimeout(w.timer);
        this.waiters.delete(w);
        w.resolve(line);
      }
    }
  }

  /** All output so far as text (stdout and stderr interleaved by arrival). */
  output(): string {
    return this.lines.map((l) => l.raw).join('\n');
  }

  /** Last lines of output, for error messages. */
  tail(n = 30): string {
    return this.lines.slice(-n).map((l) => `  [${this.name} ${l.stream}] ${l.raw}`).join('\n');
  }

  /** JSON lines seen so far (pino logs). */
  events(event?: string): Record<string, unknown>[] {
    return this.lines.filter((l) => l.json && (event === undefined || l.json.event === event)).map((l) => l.json!);
  }

  /**
   * Resolve with the first line (already seen or future, unless `onlyNew`) matching `pred`.
   * Rejects on timeout or when the process exits first.
   */
  waitForLine(pred: (l: LogLine) => boolean, timeoutMs = 10_000, onlyNew = false): Promise<LogLine> {
    if (!onlyNew) {
      const found = this.lines.find((l) => safePred(pred, l));
      if (found) return Promise.resolve(found);
    }
    if (!this.running) {
      return Promise.reject(new Error(`${this.name} already exited (code ${this.exitInfo?.code}), line not seen\n${this.tail()}`));
    }
    return new Promise<LogLine>((resolve, reject) => {
      const w: Waiter = {
        pred,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          reject(new Error(`${this.name}: no matching line within ${timeoutMs} ms\n${this.tail()}`));
        }, timeoutMs),
      };
      this.waiters.add(w);
    });
  }

  /** Wait for a pino line with `event === name` (and optional extra predicate); resolves with its JSON. */
  async waitForEvent(
    event: string,
    timeoutMs = 10_000,
    match?: (j: Record<string, unknown>) => boolean,
    onlyNew = false,
  ): Promise<Record<string, unknown>> {
    const l = await this.waitForLine((x) => x.json?.event === event && (!match || match(x.json)), timeoutMs, onlyNew);
    return l.json!;
  }

  /** Write to stdin (needs `stdin: true`). */
  write(data: string | Uint8Array): void {
    this.child.stdin?.write(data);
  }

  /** Send a signal to the process group and every descendant. */
  signal(sig: NodeJS.Signals): void {
    killTree(this.pid, sig);
  }

  /**
   * Stop politely, then firmly: SIGTERM the leader (danted and vsftpd then end their own forks and
   * reap them), then SIGTERM whatever is left of its tree, SIGKILL after `graceMs`.
   * Resolves once the process and its output pipes are closed.
   */
  async stop(graceMs = 3_000): Promise<ExitInfo> {
    const kids = descendants(this.pid);
    if (this.leaderRunning) {
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      const timeout = new Promise<void>((r) => {
        const t = setTimeout(r, graceMs);
        this.leaderExited.then(() => clearTimeout(t));
      });
      await Promise.race([this.leaderExited, timeout]);
    }
    killTree(this.pid, this.leaderRunning ? 'SIGKILL' : 'SIGTERM', kids);
    const timer = setTimeout(() => killTree(this.pid, 'SIGKILL', kids), Math.min(graceMs, 1_000));
    const info = await this.exited;
    clearTimeout(timer);
    killTree(this.pid, 'SIGKILL', kids);
    return info;
  }
}

function safePred(pred: (l: LogLine) => boolean, l: LogLine): boolean {
  try {
    return pred(l);
  } catch {
    return false;
  }
}

/** PIDs of all descendants of `pid` (read from /proc). */
export function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      // comm may contain spaces/parens: fields after the last ')' are fixed.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(e), Number(rest[1]));
    } catch {
      /* process vanished */
    }
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift()!;
    for (const [c, pp] of parent) {
      if (pp === p && !out.includes(c)) {
        out.push(c);
        queue.push(c);
      }
    }
  }
  return out;
}

/** Signal process group `pid`, the process, its current descendants and `extra` PIDs; ignores ESRCH. */
export function killTree(pid: number, sig: NodeJS.Signals, extra: number[] = []): void {
  const targets = new Set<number>([...descendants(pid), ...extra]);
  for (const p of [-pid, pid, ...targets]) {
    try {
      process.kill(p, sig);
    } catch {
      /* already gone */
    }
  }
}

export function spawnProc(cmd: string, args: readonly string[], opts: SpawnOptions = {}): Proc {
  return new Proc(cmd, args, opts);
}

/** Stop every process spawned through this module that is still running. */
export async function stopAll(graceMs = 2_000): Promise<void> {
  await Promise.all([...live].map((p) => p.stop(graceMs)));
}

export function liveProcs(): Proc[] {
  return [...live];
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  netns?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  input?: string | Uint8Array;
  /** Buffer limit for stdout/stderr. */
  maxBuffer?: number;
}

/** Run a command to completion; never throws on a non-zero exit (check `.code`). */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const w = wrapNetns(opts.netns, cmd, args);
  return new Promise((resolve, reject) => {
    const child = execFile(
      w.cmd,
      w.args,
      { cwd: opts.cwd, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 30_000, maxBuffer: opts.maxBuffer ?? 64 * 1024 * 1024, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        if (err && typeof (err as NodeJS.ErrnoException).code === 'string') {
          reject(new Error(`${w.cmd}: ${err.message}`));
          return;
        }
        const code = err ? ((err as { code?: number }).code ?? (child.signalCode ? 128 : 1)) : 0;
        resolve({ code: typeof code === 'number' ? code : 1, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** Like run(), but throws with output when the exit code is not 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** A TCP port that was free on `host` a moment ago (listen on port 0, close). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Poll `ss` (inside `netns` if given) until something listens on TCP `port` (and `address` if given). */
export async function waitListening(port: number, opts: { netns?: string; address?: string; timeoutMs?: number; proc?: Proc } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    const r = await run('ss', ['-Hltn', `sport = :${port}`], { netns: opts.netns });
    const lines = r.stdout.split('\n').filter((l) => l.trim());
    if (lines.some((l) => !opts.address || l.includes(`${opts.address}:${port}`) || l.includes(`*:${port}`) || l.includes(`0.0.0.0:${port}`))) return;
    if (opts.proc && !opts.proc.running) {
      throw new Error(`${opts.proc.name} exited (code ${opts.proc.exitInfo?.code}) before listening on ${port}\n${opts.proc.tail()}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`nothing listening on ${opts.address ?? '*'}:${port}${opts.netns ? ` in ${opts.netns}` : ''}${opts.proc ? `\n${opts.proc.tail()}` : ''}`);
    }
    await new Promise((r2) => setTimeout(r2, 50));
  }
}

// Synchronous last resort: when the test process exits, no spawned daemon may outlive it.
const exitHooks: Array<() => void> = [];
/** Register a synchronous cleanup run on process exit (and SIGINT/SIGTERM). */
export function onExitSync(fn: () => void): () => void {
  exitHooks.push(fn);
  return () => {
    const i = exitHooks.indexOf(fn);
    if (i >= 0) exitHooks.splice(i, 1);
  };
}

function runExitHooks(): void {
  for (const p of live) killTree(p.pid, 'SIGKILL');
  live.clear();
  for (const fn of exitHooks.splice(0).reverse()) {
    try {
      fn();
    } catch {
      /* best effort */
    }
  }
}

process.on('exit', runExitHooks);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    runExitHooks();
    process.kill(process.pid, sig);
  });
}

/** For exit hooks that must shell out synchronously (ip netns del, userdel). */
export function execSyncQuiet(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
  } catch {
    /* best effort */
  }
}

/** Is the process gone? A zombie (state Z) counts: it runs nothing and holds no socket. */
export function pidGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}
