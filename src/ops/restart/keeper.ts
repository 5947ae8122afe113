/**
 * keeper.ts — the small process that holds a worker's fds, so `vmpi serve` survives a crash of
 * its worker without systemd (containers, CI, a plain shell): what `vmpi serve` runs by default.
 *
 * Owns: the worker's life. It speaks the worker's side of systemd's protocol: a private
 * datagram socket as the worker's $NOTIFY_SOCKET (in a 0700 directory, so only this user can
 * send to it), where the worker's `FDSTORE=1`/`FDNAME=`/`FDSTOREREMOVE=1` keep and drop fds and
 * READY=1 says it serves; each new worker gets every kept fd back at 3.. with $LISTEN_FDS,
 * $LISTEN_FDNAMES and $LISTEN_PID (set to the worker's pid by `sh -c 'LISTEN_PID=$$ exec …'`,
 * as systemd sets it after fork). The worker code cannot tell the keeper from systemd.
 *
 * When the worker ends:
 * - exit 75 (EXIT_RESTART: it passed an upgrade check and handed over): a new worker at once,
 *   from the code on disk now (an upgrade);
 * - killed, or exit other than 0: a crash; a new worker after a short backoff. A worker that
 *   fails again before it is READY again, or within CRASH_WINDOW_MS, counts toward a crash loop:
 *   after MAX_QUICK_CRASHES the keeper stops restarting, says so in one log line, and keeps
 *   holding the fds (QEMU sees no close: the VMs' devices stay as they are, paused) until SIGHUP
 *   asks it to try again, or SIGTERM/SIGINT ends it;
 * - exit 0 (the worker shut down cleanly: someone sent it SIGTERM) or a first worker that exits
 *   before it was ever READY (a bad config): the keeper ends with the same status. A first
 *   worker killed by a signal before READY is a crash like the others.
 * Signals: SIGTERM/SIGINT go to the worker (a clean shutdown), then the keeper ends; SIGHUP goes
 * to the worker (it checks the code on disk can read its state, then hands over with exit 75),
 * or restarts a worker after a crash loop. Limits: at most MAX_FDS fds kept; a datagram with
 * more, or a bad name, is refused with a log line (the worker's resume then lacks that fd).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { errText, safeClose } from '../../sys/fd.js';
import type { Logger } from '../../sys/log.js';
import { native, type FdWatcher } from '../../sys/native.js';
import { checkFdName, notifyState } from '../notify.js';
import { inheritedFds } from './fd-store.js';

/** Exit status of a worker that handed over and asks to be started again (EX_TEMPFAIL). */
export const EXIT_RESTART = 75;
/** Exit status of a worker that refuses the restart state (another format version). */
export const EXIT_STATE_REFUSED = 3;
export const MAX_FDS = 4096;
export const MAX_QUICK_CRASHES = 5;
/** A worker that dies within this long of its READY=1 (or before it) crashed "right after resuming". */
export const CRASH_WINDOW_MS = 2_000;

export interface KeeperOptions {
  log: Logger;
  /** The worker's command: `node [execArgv] cli.js serve …` (the keeper's own, by default). */
  command?: string[];
  env?: NodeJS.ProcessEnv;
}

export class Keeper {
  private readonly fds = new Map<string, number[]>();
  private readonly dir: string;
  private readonly socketPath: string;
  private readonly sock: number;
  private readonly watcher: FdWatcher;
  private readonly buf = new Uint8Array(4096);
  private child: ChildProcess | null = null;
  private childReady = false;
  private everReady = false;
  private readyAt = 0;
  private quickCrashes = 0;
  private stopping = false;
  private gaveUp = false;
  private timer: NodeJS.Timeout | null = null;
  private done!: (code: number) => void;
  /** Resolves with the keeper's exit status. */
  readonly finished: Promise<number>;
  /** Workers started (the first included). */
  spawned = 0;

  constructor(private readonly opts: KeeperOptions) {
    this.finished = new Promise((r) => (this.done = r));
    this.dir = mkdtempSync(join(tmpdir(), 'vmpi-keeper-'));
    this.socketPath = join(this.dir, 'notify');
    this.sock = native.bindUnixDgram(this.socketPath);
    this.watcher = native.watchReadable(this.sock, () => this.receive());
    this.watcher.start();
    // Fds this keeper inherited (socket activation with --restart keeper) are the worker's too.
    const env = opts.env ?? process.env;
    for (const [name, list] of inheritedFds(env)) this.fds.set(name, list);
    delete env.LISTEN_FDS;
    delete env.LISTEN_PID;
    delete env.LISTEN_FDNAMES;
  }

  /** Start the first worker and forward signals; resolves with the exit status for the process. */
  run(): Promise<number> {
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => this.stop(sig));
    process.on('SIGHUP', () => this.hangup());
    this.spawnWorker();
    return this.finished;
  }

  /** Number of fds held now. */
  get heldFds(): number {
    let n = 0;
    for (const l of this.fds.values()) n += l.length;
    return n;
  }

  private spawnWorker(): void {
    this.timer = null;
    const names: string[] = [];
    const fds: number[] = [];
    for (const [name, list] of this.fds) {
      for (const fd of list) {
        names.push(name);
        fds.push(fd);
      }
    }
    const command = this.opts.command ?? [process.execPath, ...process.execArgv, ...process.argv.slice(1)];
    const base = this.opts.env ?? process.env;
    // V8's compile cache: a restarted worker loads its modules from bytecode (a shorter window).
    const env = { NODE_COMPILE_CACHE: join(tmpdir(), `vmpi-compile-cache-${process.getuid?.() ?? 0}`), ...base, NOTIFY_SOCKET: this.socketPath, VMPI_RESTART_ROLE: 'worker', LISTEN_FDS: String(fds.length), LISTEN_FDNAMES: names.join(':') };
    let child: ChildProcess;
    try {
      // detached: a session of its own, so a Ctrl-C on the terminal reaches the keeper only (which
      // passes it on once) and not the worker twice; it still dies with the keeper (pdeathsig).
      child = spawn('/bin/sh', ['-c', 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', 'sh', ...command], { stdio: ['inherit', 'inherit', 'inherit', ...fds], env, detached: true });
    } catch (e) {
      this.opts.log.error({ err: errText(e) }, 'keeper: cannot start a worker; retrying in 1 s');
      this.timer = setTimeout(() => this.spawnWorker(), 1000);
      return;
    }
    this.child = child;
    this.childReady = false;
    this.spawned++;
    // The first start is the usual case and says nothing (a usage error's stderr stays just that).
    if (this.spawned === 1) this.opts.log.debug({ workerPid: child.pid }, 'keeper: worker started');
    else this.opts.log.info({ workerPid: child.pid, fds: fds.length, worker: this.spawned }, 'keeper: worker restarted with the kept fds');
    child.on('error', (e) => this.opts.log.error({ err: errText(e) }, 'keeper: worker process error'));
    child.on('exit', (code, signal) => this.exited(child, code, signal));
  }

  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = null;
    const wasReady = this.childReady;
    if (this.stopping) return this.finish(code ?? 128 + signalNumber(signal));
    if (code === EXIT_RESTART) {
      this.opts.log.info('keeper: the worker handed over; starting the new one');
      return this.spawnWorker();
    }
    if (code === 0) return this.finish(0);
    // A first worker that exits before it was ever READY has a bad config or command line: end
    // with its status. One killed by a signal then (SIGKILL, the OOM killer) crashed like any
    // other: the crash-loop guard below bounds the retries.
    if (!this.everReady && code !== null) return this.finish(code);
    const quick = !wasReady || Date.now() - this.readyAt < CRASH_WINDOW_MS;
    this.quickCrashes = quick ? this.quickCrashes + 1 : 1;
    const why = signal ? `killed by ${signal}` : `exit status ${String(code)}`;
    if (this.quickCrashes > MAX_QUICK_CRASHES) {
      this.gaveUp = true;
      this.opts.log.error(
        { crashes: this.quickCrashes - 1, why, heldFds: this.heldFds },
        `keeper: the worker crashed ${this.quickCrashes - 1} times in a row right after resuming; not restarting it again. The VMs' devices are kept as they are (paused). Fix the cause, then send SIGHUP to this keeper (pid ${process.pid}) to try again, or SIGTERM to release the VMs' devices`,
      );
      return;
    }
    const delay = Math.min(2000, this.quickCrashes <= 2 ? 0 : 100 * 2 ** (this.quickCrashes - 3));
    this.opts.log.warn({ why, restartInMs: delay, quickCrashes: this.quickCrashes }, 'keeper: the worker died; restarting it with the kept fds');
    this.timer = setTimeout(() => this.spawnWorker(), delay);
  }

  private stop(sig: NodeJS.Signals): void {
    if (this.stopping) return;
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.child) this.child.kill(sig);
    else this.finish(0);
  }

  private hangup(): void {
    if (this.stopping) return;
    if (this.child) {
      this.child.kill('SIGHUP');
      return;
    }
    if (this.gaveUp) {
      this.gaveUp = false;
      this.quickCrashes = 0;
      this.opts.log.info('keeper: SIGHUP: trying a worker again');
      this.spawnWorker();
    }
  }

  private finish(code: number): void {
    this.watcher.close();
    safeClose(this.sock);
    for (const list of this.fds.values()) for (const fd of list) safeClose(fd);
    this.fds.clear();
    rmSync(this.dir, { recursive: true, force: true });
    this.done(code);
  }

  /** One notify datagram from the worker. */
  private receive(): void {
    for (;;) {
      let r: { bytes: number; fds: number[] } | null;
      try {
        r = native.recvMsg(this.sock, this.buf, 0, this.buf.byteLength, 253);
      } catch (e) {
        this.opts.log.warn({ err: errText(e) }, 'keeper: bad datagram on the notify socket');
        continue;
      }
      if (r === null) return;
      try {
        this.handle(Buffer.from(this.buf.buffer, this.buf.byteOffset, r.bytes).toString('utf8'), r.fds);
      } catch (e) {
        for (const fd of r.fds) safeClose(fd);
        this.opts.log.warn({ err: errText(e) }, 'keeper: refused a notify datagram');
      }
    }
  }

  private handle(text: string, fds: number[]): void {
    const f = new Map<string, string>();
    for (const line of text.split('\n')) {
      const i = line.indexOf('=');
      if (i > 0) f.set(line.slice(0, i), line.slice(i + 1));
    }
    if (f.get('FDSTORE') === '1') {
      const name = f.get('FDNAME') ?? 'stored';
      checkFdName(name);
      if (this.heldFds + fds.length > MAX_FDS) throw new Error(`the worker would hold more than ${MAX_FDS} fds; "${name}" not kept`);
      const list = this.fds.get(name) ?? [];
      list.push(...fds);
      this.fds.set(name, list);
      fds = [];
    }
    for (const fd of fds) safeClose(fd); // fds with anything but FDSTORE=1 are not ours to keep
    if (f.get('FDSTOREREMOVE') === '1') {
      const name = f.get('FDNAME');
      if (name !== undefined) {
        for (const fd of this.fds.get(name) ?? []) safeClose(fd);
        this.fds.delete(name);
      }
    }
    if (f.get('READY') === '1') {
      this.childReady = true;
      this.readyAt = Date.now();
      if (!this.everReady) notifyState(this.opts.log, { READY: '1' }, { env: this.opts.env });
      this.everReady = true;
    }
    const status = f.get('STATUS');
    if (status !== undefined) notifyState(this.opts.log, { STATUS: status }, { env: this.opts.env });
  }
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? (constants.signals[signal] ?? 0) : 0;
}
