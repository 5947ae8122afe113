/**
 * guest.ts — boots a TCG guest under real QEMU 10 for integration tests.
 *
 * Owns: finding the guest artefacts built by scripts/guest/build.sh (.cache/guest/), launching
 * QEMU through qemu-configs/launch-guest.sh with one VMPI device per socket and the test's own
 * script as the guest's /etc/vmpi-run.sh (`--run`), and reading the serial
 * console: `waitFor(pattern)` and the guest's exit line `VMPI-GUEST-EXIT <code>`.
 * Benches use it too (bench/fig4a: extra QEMU arguments such as a NIC, QEMU inside a network
 * namespace, its own process group, `liveGuests` for their signal handlers).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const GUEST_DIR = join(ROOT, '.cache', 'guest');
const LAUNCH = join(ROOT, 'qemu-configs', 'launch-guest.sh');

/** Why guest tests cannot run here, or null when they can. */
export function guestUnavailable(): string | null {
  for (const f of ['vmlinuz', 'initramfs.cpio.gz']) {
    if (!existsSync(join(GUEST_DIR, f))) return `guest artefact ${f} missing: run scripts/guest/build.sh`;
  }
  if (!existsSync(LAUNCH)) return 'qemu-configs/launch-guest.sh missing';
  const q = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  if (q.status !== 0) return 'qemu-system-x86_64 not installed: run scripts/setup-system.sh';
  return null;
}

/** `p`, or a rejection saying `what` did not happen within `ms` (for waits the Guest does not bound itself). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Poll `cond` on the host every 20 ms until it holds, at most `ms` (host-side state a QEMU test waits on). */
export async function hostCondition(cond: () => boolean, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Wait for the guest's process to end (after poweroff), at most `ms`. */
export function guestExit(g: Guest, ms = 60_000): Promise<GuestResult> {
  return within(g.done, ms, 'the guest to power off and QEMU to exit');
}

export interface GuestOptions {
  /** One VMPI device per socket, in order (/dev/vmpi0, /dev/vmpi1, ... in the guest). */
  sockets?: string[];
  /**
   * Shell script run by the guest's /init after the modules are loaded, then the guest powers
   * off. Without a script the guest runs its agent: a shell on the console driven by `exec()`.
   */
  script?: string;
  /** Let `reboot -f` in the guest restart it instead of ending QEMU. */
  allowReboot?: boolean;
  /** Boot the Node guest image (launch-guest.sh --node; scripts/guest/build-node.sh). */
  node?: boolean;
  memMb?: number;
  /** Extra kernel command line arguments (e.g. slub_debug=FZPU). */
  append?: string[];
  /** QEMU -name, shown in ps. */
  name?: string;
  /** Whole-run limit; the guest is killed after it (default 120 s; 0: none). */
  timeoutMs?: number;
  /** Extra QEMU arguments (launch-guest.sh after `--`), e.g. a NIC. */
  qemuArgs?: string[];
  /** Run launch-guest.sh, and so QEMU, inside this network namespace (`ip netns exec NS`). */
  netns?: string;
  /**
   * Start launch-guest.sh in its own process group (default true), so that `kill()` ends it and
   * QEMU together; without it, kill() ends only launch-guest.sh and QEMU, its child, runs on.
   * A Ctrl-C at the terminal then reaches neither: the owner's signal handler kills `liveGuests`.
   */
  processGroup?: boolean;
}

export interface GuestResult {
  exitCode: number | null;
  output: string;
}

/**
 * A guest script (GuestOptions.script) that writes `js` to /tmp/app.mjs and runs it with the Node
 * guest image's node, after the shell lines of `setup` (e.g. starting a daemon).
 */
export function nodeScript(js: string, setup = ''): string {
  return `cat > /tmp/app.mjs <<'VMPI_JS_EOF'\n${js}\nVMPI_JS_EOF\n${setup}node /tmp/app.mjs\n`;
}

/** The line `Guest.background` has the shell print after starting a job: its pid, and the line's end. */
const BACKGROUND_PID = /VMPI-BG (\d+)\r?\n/;

/**
 * The pid a `cmd & echo "VMPI-BG $!"` line printed, once its line has ended, else undefined. The
 * serial console delivers output in arbitrary chunks: matching before the line's end read a
 * prefix of the digits under load ("VMPI-BG 12" of 1234), and the test killed the wrong pid.
 */
export function backgroundPid(consoleText: string): number | undefined {
  const m = BACKGROUND_PID.exec(consoleText);
  return m ? Number(m[1]) : undefined;
}

/** Every guest started and not yet ended or killed, for signal handlers. */
export const liveGuests = new Set<Guest>();

export class Guest {
  readonly proc: ChildProcess;
  output = '';
  readonly done: Promise<GuestResult>;
  private readonly tmp: string | null = null;
  private readonly processGroup: boolean;
  private readonly waiters = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private seq = 0;

  constructor(opts: GuestOptions) {
    const args = [LAUNCH, '--mem', `${opts.memMb ?? 512}M`, '--name', opts.name ?? 'vmpi-test-guest'];
    if (opts.script !== undefined) {
      this.tmp = mkdtempSync(join(tmpdir(), 'vmpi-guest-'));
      const script = join(this.tmp, 'run.sh');
      writeFileSync(script, opts.script);
      args.push('--run', script);
    } else {
      args.push('--append', 'vmpi_agent');
    }
    for (const a of opts.append ?? []) args.push('--append', a);
    if (opts.allowReboot) args.push('--allow-reboot');
    if (opts.node) args.push('--node');
    for (const s of opts.sockets ?? []) args.push('--vmpi', s);
    if (opts.qemuArgs?.length) args.push('--', ...opts.qemuArgs);
    const argv = opts.netns ? ['ip', 'netns', 'exec', opts.netns, 'bash', ...args] : ['bash', ...args];
    this.processGroup = opts.processGroup ?? true;
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], detached: this.processGroup });
    liveGuests.add(this);
    this.proc.stdin!.on('error', () => {});
    const onData = (d: Buffer) => {
      this.output += d.toString('utf8');
      for (const w of [...this.waiters]) w();
    };
    this.proc.stdout!.on('data', onData);
    this.proc.stderr!.on('data', onData);
    const limit = opts.timeoutMs ?? 120_000;
    if (limit > 0) {
      this.timer = setTimeout(() => {
        this.output += '\n[harness] guest timed out; killing QEMU\n';
        this.kill();
      }, limit);
    }
    this.done = new Promise((res) => {
      this.proc.on('exit', () => {
        clearTimeout(this.timer);
        liveGuests.delete(this);
        if (this.tmp) rmSync(this.tmp, { recursive: true, force: true });
        const m = /VMPI-GUEST-EXIT (\d+)/.exec(this.output);
        for (const w of [...this.waiters]) w();
        res({ exitCode: m ? Number(m[1]) : null, output: this.output });
      });
    });
  }

  /** launch-guest.sh (or `ip netns exec`) has exited. */
  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  /** Console output length: pass it to `waitFor` to match only what comes after now. */
  get mark(): number {
    return this.output.length;
  }

  /** Resolves with the first match of `re` in the console output from offset `from`. */
  waitFor(re: RegExp, timeoutMs = 60_000, from = 0): Promise<RegExpMatchArray> {
    return new Promise((res, rej) => {
      const check = () => {
        const m = re.exec(this.output.slice(from));
        if (m) {
          cleanup();
          res(m);
        } else if (this.exited) {
          cleanup();
          rej(new Error(`guest exited before printing ${re}; output:\n${this.output.slice(-3000)}`));
        }
      };
      const t = setTimeout(() => {
        cleanup();
        rej(new Error(`timed out after ${timeoutMs} ms waiting for ${re}; output:\n${this.output.slice(-3000)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(t);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /**
   * Wait for a console line `TAG {json}` and parse it. The match needs the line's end: the serial
   * console delivers output in arbitrary chunks, so a line may have arrived only in part.
   */
  async waitJson<T = Record<string, unknown>>(tag: string, timeoutMs = 60_000, from = 0): Promise<T> {
    const m = await this.waitFor(new RegExp(`${tag} (\\{[^\\r\\n]*\\})\\r?\\n`), timeoutMs, from);
    return JSON.parse(m[1]!) as T;
  }

  /** Wait for the agent shell (after boot or reboot number `boot`, counting from 1). */
  async agentReady(boot = 1, timeoutMs = 90_000): Promise<void> {
    let from = 0;
    for (let i = 0; i < boot; i++) {
      const m = await this.waitFor(/VMPI-AGENT-READY/, timeoutMs, from);
      from += m.index! + m[0].length;
    }
  }

  /**
   * Start one shell command line in the agent without waiting: `from` is the console offset it
   * started at (for `waitFor` on its output while it runs), `done` resolves with its exit status
   * and console output (a rejection nobody awaits, e.g. after the caller gave up, is not an
   * unhandled one).
   */
  start(cmd: string, timeoutMs = 60_000): { from: number; done: Promise<{ rc: number; out: string }> } {
    const id = ++this.seq;
    const from = this.mark;
    this.proc.stdin!.write(`${cmd}; echo "VMPI-RC-${id} $?"\n`);
    // The status's line end too: a chunk may end inside its digits.
    const done = this.waitFor(new RegExp(`VMPI-RC-${id} (\\d+)\\r?\\n`), timeoutMs, from).then((m) => {
      const text = this.output.slice(from);
      return { rc: Number(m[1]), out: text.slice(0, text.indexOf(`VMPI-RC-${id}`)) };
    });
    done.catch(() => {});
    return { from, done };
  }

  /** Run one shell command line in the agent; resolves with its exit status and console output. */
  async exec(cmd: string, timeoutMs = 60_000): Promise<{ rc: number; out: string }> {
    return this.start(cmd, timeoutMs).done;
  }

  /** Start `cmd` as a background job of the agent shell; resolves with its pid (the job's `$!`). */
  async background(cmd: string, timeoutMs = 30_000): Promise<number> {
    const from = this.mark;
    this.send(`${cmd} & echo "VMPI-BG $!"`);
    return Number((await this.waitFor(BACKGROUND_PID, timeoutMs, from))[1]);
  }

  /** Write a command line without waiting (for background jobs and reboot). */
  send(cmd: string): void {
    this.proc.stdin!.write(cmd + '\n');
  }

  /** Power the agent guest off (`poweroff -f`), wait up to `graceMs` for QEMU to end, then kill. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.exited) {
      this.send('poweroff -f');
      let grace: NodeJS.Timeout | undefined;
      await Promise.race([this.done, new Promise((r) => (grace = setTimeout(r, graceMs)))]);
      clearTimeout(grace);
    }
    this.kill();
  }

  /**
   * SIGKILL launch-guest.sh, or with `processGroup` its whole group (QEMU too, even when
   * launch-guest.sh is already gone). Synchronous, for signal handlers.
   */
  kill(): void {
    liveGuests.delete(this);
    if (this.processGroup && this.proc.pid !== undefined) {
      try {
        process.kill(-this.proc.pid, 'SIGKILL');
      } catch {
        // the group is gone
      }
    } else if (!this.exited) {
      this.proc.kill('SIGKILL');
    }
  }
}
