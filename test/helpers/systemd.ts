/**
 * systemd.ts — a real systemd (Debian 12's 252) as PID 1 of a fresh PID + mount + UTS + IPC
 * (optionally network) namespace, for tests of what only systemd does (the fd store, Type=notify,
 * Restart=, socket activation, the shipped units): no imitation. The root is an overlay over the cached rootfs of scripts/systemd-rootfs.sh (its
 * upper layer on a tmpfs of the namespace, so every instance starts clean and the cache is never
 * written), with the project checkout, the Node that runs the tests and any extra directories
 * bind-mounted at the SAME paths, so commands and paths are the same inside and out.
 *
 * Owns: the namespace's lifetime (t.teardown kills its PID 1 with SIGKILL, which ends everything
 * in it and drops its mounts; a test process that dies takes it along through PDEATHSIG), the
 * cgroup it runs in (one per instance, removed after it; what a killed test process left is swept
 * at the next start), and bounded commands inside (nsenter).
 * Needs root, unshare/nsenter/setpriv (util-linux) and the rootfs; systemdUnavailable() says why
 * not. Each instance boots in about a second here.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Test } from 'tap';

export const PROJECT_ROOT = resolve(import.meta.dirname, '../..');
export const SYSTEMD_ROOTFS = join(PROJECT_ROOT, '.cache/systemd-rootfs');
/** The prefix of the Node running the tests (bin/node under it), bind-mounted as it is. */
export const NODE_PREFIX = dirname(dirname(realpathSync(process.execPath)));

export interface RunResult {
  stdout: string;
  stderr: string;
  /** Exit code, or null when it ended by a signal (see `signal`). */
  rc: number | null;
  signal: string | null;
}

export interface RunOptions {
  /** Kill the command (SIGKILL) after this many ms; default 20 s. */
  timeoutMs?: number;
  input?: string;
}

export interface TransientUnit {
  /** Unit properties (`-p K=V`), e.g. { Type: 'notify', FileDescriptorStoreMax: 16, Restart: 'on-failure' }. */
  properties?: Record<string, string | number>;
  /** The service's environment (`--setenv`). */
  env?: Record<string, string>;
  /** Return once the start job is queued instead of when it finished (READY=1 for Type=notify). */
  noBlock?: boolean;
  timeoutMs?: number;
}

export interface Systemd {
  /** Host PID of the namespace's PID 1 (systemd). */
  readonly pid1: number;
  /** Run argv inside (all namespaces of PID 1, its root and cwd), bounded; never throws for rc != 0. */
  run(argv: string[], opts?: RunOptions): Promise<RunResult>;
  /** run(), but throws (with stdout/stderr) unless rc is 0; returns stdout. */
  runOk(argv: string[], opts?: RunOptions): Promise<string>;
  /** `systemd-run --unit=NAME -p ... --setenv ... -- argv`: a transient service. */
  startUnit(name: string, argv: string[], unit?: TransientUnit): Promise<RunResult>;
  /** `systemctl show -p P1,P2 NAME` as a record. */
  show(name: string, props: string[]): Promise<Record<string, string>>;
  /** `journalctl -u NAME -o cat`, all of it. */
  journal(name: string): Promise<string>;
  /** Poll `show` until `pred` holds, at most `ms`; throws with the last values and the journal. */
  waitShow(name: string, props: string[], pred: (p: Record<string, string>) => boolean, ms?: number, what?: string): Promise<Record<string, string>>;
  /** Kill the namespace (idempotent, bounded); t.teardown calls it too. */
  stop(): Promise<void>;
  /** systemd's own console output so far (the last 64 KiB). */
  console(): string;
  /** The host's path to `path` inside (through /proc/PID1/root): files to write, sockets in /run to connect to. */
  hostPath(path: string): string;
  /** Write a file inside (parents made), e.g. a unit in /etc/systemd/system. */
  writeFile(path: string, text: string, mode?: number): void;
}

/** A host directory bind-mounted inside: at the same path (a string), or at `target`. */
export type Bind = string | { source: string; target: string };

export interface StartOptions {
  /** More host directories to bind-mount (e.g. a test's temporary directory at the same path). */
  binds?: Bind[];
  /** Bound for the boot (`systemctl is-system-running` says running or degraded); default 30 s. */
  bootMs?: number;
  /** A network namespace of its own too (only a loopback, which systemd brings up): for services that listen on fixed ports. */
  net?: boolean;
}

function have(cmd: string): boolean {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Why startSystemd cannot run here, or undefined when it can. */
export function systemdUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'needs root (namespaces, mounts, chroot)';
  for (const c of ['unshare', 'nsenter', 'setpriv']) if (!have(c)) return `${c} (util-linux) is missing`;
  if (!existsSync(join(SYSTEMD_ROOTFS, 'lib/systemd/systemd'))) return `no systemd rootfs in ${SYSTEMD_ROOTFS}: run scripts/systemd-rootfs.sh`;
  // Bind-mounting a system prefix over the rootfs's own would replace its /usr.
  if (['/', '/usr', '/usr/local'].includes(NODE_PREFIX)) return `node is installed in ${NODE_PREFIX}, which cannot be bind-mounted over the rootfs: use scripts/setup-node.sh's Node`;
  return undefined;
}

// Inside the new namespaces (PID 1 there is this shell until it execs systemd): join a fresh
// cgroup (systemd takes the one it starts in as its root, so instances never share a tree), an
// overlay root on a tmpfs, the API file systems, the bind mounts, then systemd with a clean
// environment. Mounts are private to the namespace (unshare's default propagation).
const BOOT_SCRIPT = `set -eu
for cg in $VMPI_SD_CGROUPS; do
  { mkdir -p "$cg" && echo 0 > "$cg/cgroup.procs"; } || { echo "cannot join the cgroup $cg" >&2; exit 1; }
done
X=$VMPI_SD_DIR
mount -t tmpfs -o mode=0755 vmpi-systemd "$X"
mkdir "$X/upper" "$X/work" "$X/root"
mount -t overlay overlay -o "lowerdir=$VMPI_SD_ROOTFS,upperdir=$X/upper,workdir=$X/work" "$X/root"
R=$X/root
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
printf '%s\\n' "$VMPI_SD_BINDS" | while IFS=$'\\t' read -r src dst; do
  [ -n "$src" ] || continue
  mkdir -p "$R$dst"; mount --bind "$src" "$R$dst"
done
exec chroot "$R" /usr/bin/env -i container=other /lib/systemd/systemd --system
`;

const CLEAN_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', SYSTEMD_PAGER: '', SYSTEMD_COLORS: '0' };

/** The cgroup directories (one per mounted hierarchy systemd uses) for a new instance. */
function cgroupDirs(tag: string): string[] {
  const dirs: string[] = [];
  const lines = readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n');
  for (const l of lines) {
    const [, ctrl, path] = /^\d+:([^:]*):(.*)$/.exec(l) ?? [];
    if (path === undefined) continue;
    let mnt: string | undefined;
    if (ctrl === 'name=systemd') mnt = '/sys/fs/cgroup/systemd';
    else if (ctrl === '') mnt = existsSync('/sys/fs/cgroup/unified/cgroup.procs') ? '/sys/fs/cgroup/unified' : existsSync('/sys/fs/cgroup/cgroup.procs') ? '/sys/fs/cgroup' : undefined;
    if (mnt !== undefined && existsSync(join(mnt, path))) dirs.push(join(mnt, path, tag));
  }
  return dirs;
}

/** rmdir a cgroup tree depth-first (cgroup directories only go away empty, one at a time). */
function removeCgroup(dir: string): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroup(join(dir, e.name));
  try {
    rmdirSync(dir);
  } catch {
    // still has a process (it dies with the namespace): best effort, the next check finds it
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function runProcess(cmd: string, args: string[], opts: RunOptions & { env?: NodeJS.ProcessEnv }): Promise<RunResult> {
  const ms = opts.timeoutMs ?? 20_000;
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { env: opts.env ?? CLEAN_ENV, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, ms);
    child.on('error', (e) => {
      clearTimeout(timer);
      rej(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) rej(new Error(`${cmd} ${args.join(' ')}: no end within ${ms} ms; stdout: ${stdout}; stderr: ${stderr}`));
      else res({ stdout, stderr, rc: code, signal });
    });
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => {}); // a command that exits without reading its input
      child.stdin.end(opts.input);
    }
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

let instances = 0;

/**
 * What an instance of a test process that was killed outright (no teardown) left: its empty
 * cgroups and its temporary directory (empty on the host: the mounts were the namespace's).
 */
function sweepStale(): void {
  const stale = (name: string) => {
    const m = /^vmpi-systemd-(\d+)-/.exec(name);
    return m !== null && Number(m[1]) !== process.pid && !alive(Number(m[1]));
  };
  for (const cg of cgroupDirs('x')) {
    const parent = dirname(cg);
    for (const e of readdirSync(parent)) if (stale(e)) removeCgroup(join(parent, e));
  }
  for (const e of readdirSync(tmpdir())) {
    if (!stale(e)) continue;
    try {
      rmdirSync(join(tmpdir(), e));
    } catch {
      // not empty: not ours to remove
    }
  }
}

/**
 * Boot a systemd in new namespaces; resolves once it says running or degraded (bounded). The
 * test's teardown kills it. Throws (with systemd's console output) when it does not come up.
 */
export async function startSystemd(t: Test, opts: StartOptions = {}): Promise<Systemd> {
  const why = systemdUnavailable();
  if (why !== undefined) throw new Error(`systemd cannot run here: ${why}`);
  sweepStale();
  const tag = `vmpi-systemd-${process.pid}-${++instances}`;
  const dir = mkdtempSync(join(tmpdir(), `${tag}-`));
  const cgroups = cgroupDirs(tag);
  const binds = [PROJECT_ROOT, NODE_PREFIX, ...(opts.binds ?? [])].map((b) => (typeof b === 'string' ? { source: b, target: b } : b));
  for (const b of binds) {
    if (!statSync(b.source).isDirectory()) throw new Error(`bind ${b.source}: not a directory`);
    if (/[\t\n]/.test(b.source + b.target) || !b.target.startsWith('/')) throw new Error(`bind ${b.source} -> ${b.target}: paths must be absolute, without tabs or newlines`);
  }
  // setpriv --pdeathsig: unshare dies with this process; --kill-child: systemd dies with unshare.
  const unshare = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'unshare', '--pid', '--fork', '--mount', '--uts', '--ipc', ...(opts.net ? ['--net'] : []), '--kill-child=SIGKILL', 'bash', '-c', BOOT_SCRIPT], {
    env: { ...CLEAN_ENV, VMPI_SD_DIR: dir, VMPI_SD_ROOTFS: SYSTEMD_ROOTFS, VMPI_SD_BINDS: binds.map((b) => `${b.source}\t${b.target}`).join('\n'), VMPI_SD_CGROUPS: cgroups.join(' ') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const keep = (s: string) => {
    out = (out + s).slice(-65536);
  };
  unshare.stdout.setEncoding('utf8').on('data', keep);
  unshare.stderr.setEncoding('utf8').on('data', keep);
  let exited: string | null = null;
  const exitP = new Promise<void>((r) => unshare.on('exit', (code, sig) => ((exited = String(code ?? sig)), r())));
  unshare.on('error', (e) => keep(`spawn: ${e.message}\n`));

  let pid1 = 0;
  let stopped = false;
  // A test process that exits without its teardown (an uncaught error) still kills the namespace.
  const onExit = () => {
    if (pid1 > 0) {
      try {
        process.kill(pid1, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  };
  process.once('exit', onExit);
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.removeListener('exit', onExit);
    if (pid1 > 0 && alive(pid1)) process.kill(pid1, 'SIGKILL');
    if (exited === null) {
      const t0 = Date.now();
      await Promise.race([exitP, sleep(5000)]);
      if (exited === null) {
        unshare.kill('SIGKILL');
        await Promise.race([exitP, sleep(2000)]);
      }
      if (Date.now() - t0 > 5000) keep('[harness] the namespace took more than 5 s to end\n');
    }
    // The namespace's processes are gone with its PID 1 (the kernel kills them all); give the
    // cgroups a moment to empty.
    for (let i = 0; i < 50; i++) {
      for (const cg of cgroups) removeCgroup(cg);
      if (cgroups.every((cg) => !existsSync(cg))) break;
      await sleep(20);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  t.teardown(stop);

  // PID 1 is unshare's child (the shell that execs systemd).
  const t0 = Date.now();
  for (;;) {
    if (exited !== null) throw new Error(`the systemd namespace ended (${exited}) before it booted: ${out}`);
    const pid = unshare.pid;
    if (pid !== undefined) {
      try {
        const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
        // setpriv execs unshare (same pid); unshare forks PID 1.
        if (kids !== '') {
          const comm = readFileSync(`/proc/${kids.split(' ')[0]}/comm`, 'utf8').trim();
          if (comm === 'systemd') pid1 = Number(kids.split(' ')[0]);
        }
      } catch {
        /* not yet */
      }
    }
    if (pid1 > 0) break;
    if (Date.now() - t0 > 10_000) {
      await stop();
      throw new Error(`systemd did not start within 10 s: ${out}`);
    }
    await sleep(20);
  }

  const nsenter = ['-t', String(pid1), '-m', '-p', '-u', '-i', ...(opts.net ? ['-n'] : []), '-r', '-w'];
  const run = (argv: string[], o: RunOptions = {}) => runProcess('nsenter', [...nsenter, ...argv], o);
  const runOk = async (argv: string[], o: RunOptions = {}) => {
    const r = await run(argv, o);
    if (r.rc !== 0) throw new Error(`${argv.join(' ')}: rc ${r.rc ?? r.signal}; stdout: ${r.stdout}; stderr: ${r.stderr}`);
    return r.stdout;
  };
  const show = async (name: string, props: string[]) => {
    const text = await runOk(['systemctl', 'show', '-p', props.join(','), name]);
    const rec: Record<string, string> = {};
    for (const l of text.split('\n')) {
      const i = l.indexOf('=');
      if (i > 0) rec[l.slice(0, i)] = l.slice(i + 1);
    }
    return rec;
  };
  const journal = async (name: string) => (await run(['journalctl', '--no-pager', '-u', name, '-o', 'cat'])).stdout;
  const sd: Systemd = {
    pid1,
    run,
    runOk,
    show,
    journal,
    async startUnit(name, argv, unit = {}) {
      const args = ['systemd-run', `--unit=${name}`, '--quiet'];
      if (unit.noBlock) args.push('--no-block');
      for (const [k, v] of Object.entries(unit.properties ?? {})) args.push('-p', `${k}=${v}`);
      for (const [k, v] of Object.entries(unit.env ?? {})) args.push(`--setenv=${k}=${v}`);
      args.push('--', ...argv);
      const r = await run(args, { timeoutMs: unit.timeoutMs ?? 30_000 });
      return r;
    },
    async waitShow(name, props, pred, ms = 20_000, what = 'the expected state') {
      const end = Date.now() + ms;
      let last: Record<string, string> = {};
      for (;;) {
        last = await show(name, props);
        if (pred(last)) return last;
        if (Date.now() > end) throw new Error(`${name}: not ${what} within ${ms} ms: ${JSON.stringify(last)}; journal:\n${await journal(name)}`);
        await sleep(50);
      }
    },
    stop,
    console: () => out,
    hostPath: (p) => `/proc/${pid1}/root${p.startsWith('/') ? p : `/${p}`}`,
    writeFile(p, text, mode = 0o644) {
      const hp = sd.hostPath(p);
      mkdirSync(dirname(hp), { recursive: true });
      writeFileSync(hp, text, { mode });
    },
  };

  const bootMs = opts.bootMs ?? 30_000;
  let state = '';
  for (;;) {
    const r = await run(['systemctl', 'is-system-running'], { timeoutMs: 5000 }).catch((e: Error) => ({ stdout: e.message, stderr: '', rc: 1, signal: null }));
    state = r.stdout.trim();
    if (state === 'running' || state === 'degraded') break;
    if (exited !== null || Date.now() - t0 > bootMs) {
      const failed = exited === null ? (await run(['systemctl', '--failed', '--no-legend'], { timeoutMs: 5000 }).catch(() => null))?.stdout : '';
      await stop();
      throw new Error(`systemd did not boot within ${bootMs} ms (state "${state}", ${exited === null ? 'alive' : `ended ${exited}`}); failed units: ${failed ?? '?'}; console: ${out}`);
    }
    await sleep(100);
  }
  return sd;
}

