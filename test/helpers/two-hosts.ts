/**
 * two-hosts.ts — the paper's third scenario as a topology for tests and benches: two "hosts" =
 * two network namespaces joined by a veth pair (jumbo MTU 9000), each running its own
 * `vmpi serve` (inside its namespace, configured only by its config file) and one TCG Node guest
 * (QEMU inside the namespace too). One normal DIF spans
 *   VM-A ↔ host-A (shim-hv) ↔ host-B (shim-eth on the veth, VLAN tag in config; or shim-udp) ↔ VM-B (shim-hv)
 * host-A is its enroller, host-B a member (enrolls through the inter-host shim) that enrolls VM-B
 * itself from the block of addresses host-A delegated to it (`normal.acceptEnrollment`,
 * docs/NORMAL-DIF-ENROLLMENT.md);
 * VM-A enrolls with host-A. The guests are agent guests (driven by `exec`) running
 * `vmpi guest --config` with the enroller of their host.
 *
 * Owns: names unique per run, the namespaces, veth and (shim-udp) addresses inside them, the
 * configs, both serves, both guests and their member daemons, cutting and restoring the link,
 * and tearing all of it down (`close()`, idempotent; also when `start` fails half-way). Every
 * wait is bounded. Frames and datagrams only travel on the veth inside these namespaces.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Guest, ROOT } from './guest.js';
import { ip, uniqueName } from './netns.js';

export type InterHostShim = 'eth' | 'udp';

export interface TwoHostsOptions {
  shim: InterHostShim;
  /** Prefix of QEMU names and the temporary directory. */
  name: string;
  /** The normal DIF (default n.DIF). */
  dif?: string;
  /** VMPI-ids of VM-A and VM-B: distinct, since the guests' IPCP names derive from them. */
  vmIds?: [number, number];
  /** shim-eth: the VLAN id written by the shim (default 100). */
  vlan?: number;
  /** veth MTU (default 9000: jumbo frames, as in the paper). */
  mtu?: number;
  /** The inter-host shim DIF's keepalive period and timeout (defaults 200 ms and 1000 ms). */
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  /** Guest RAM (default 640 MB), whole-run limit (default 300 s; 0: none), boot bound (default 150 s). */
  memMb?: number;
  guestTimeoutMs?: number;
  bootMs?: number;
  /** serve's log level (default info) and guest daemon's (default warn). */
  logLevel?: string;
  /** Progress lines. */
  say?: (s: string) => void;
  /**
   * The guests' `vmpi guest` started by this Node command (e.g. with a profiler preloaded,
   * bench/common/guest-prof.ts) after `prepare` ran in that guest; default plain `node`.
   */
  guestNode?: { prepare(g: Guest): Promise<void>; nodeCmd(): string };
  /** The guests' `vmpi guest` serves its metrics on this address inside the guest (default: off). */
  guestMetrics?: string;
  /** Each serve serves its metrics on SERVE_METRICS in its namespace (HostSide.metrics; default: off, --no-metrics). */
  serveMetrics?: boolean;
}

/** Where a serve's metrics are, inside its own namespace (each has its own loopback), with `serveMetrics`. */
export const SERVE_METRICS = '127.0.0.1:19465';

export interface HostSide {
  ns: string;
  /** Its veth end. */
  iface: string;
  /** Its serve's IPC socket (host applications, `vmpi dif show`). */
  ipcSocket: string;
  serve: ChildProcess;
  /** Everything its serve wrote so far (the last 200 kB). */
  log: () => string;
  guest: Guest;
  /** Its normal IPC process name. */
  ipcpName: string;
  /** Its serve's metrics text now (`serveMetrics`; '' when off or unreachable): `path` default /metrics. */
  metrics: (path?: string) => string;
}

const CLI = [process.execPath, '--import', import.meta.resolve('tsx'), join(ROOT, 'src', 'cli.ts')] as const;
/** The vmpi CLI inside the Node guest image. */
export const GUEST_CLI = '/opt/vmpi/dist/src/cli.js';
const UDP_PORT = 7400;
const ADDR = { a: '10.203.0.1', b: '10.203.0.2' } as const;

function serveIn(ns: string, cfg: string, ipcSocket: string, level: string, metrics: boolean): { child: ChildProcess; log: () => string } {
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: level };
  delete env.NODE_OPTIONS; // without tap's loader in the child
  // VMPI_SERVE_CPU_PROF_DIR (bench/fig4c FIG4C_PROFILE=1): a V8 CPU profile per serve, written at its exit (close() stops serves with SIGTERM first then).
  const prof = process.env.VMPI_SERVE_CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.VMPI_SERVE_CPU_PROF_DIR}`, `--cpu-prof-name=serve-${ns}.cpuprofile`] : [];
  const [node, ...rest] = CLI;
  // `ip netns exec` execs the command: the child's pid is serve's, its own process group.
  const child = spawn('ip', ['netns', 'exec', ns, node, ...prof, ...rest, 'serve', '--config', cfg, '--ipc-socket', ipcSocket, ...(metrics ? ['--metrics-listen', SERVE_METRICS] : ['--no-metrics']), '--restart', 'off'], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let log = '';
  const add = (s: string) => (log = (log + s).slice(-200_000));
  child.stdout!.setEncoding('utf8').on('data', add);
  child.stderr!.setEncoding('utf8').on('data', add);
  return { child, log: () => log };
}

/** The metrics of the serve in `ns` (curl inside the namespace, bounded); '' when unreachable. */
function serveMetricsIn(ns: string, path: string): string {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'curl', '-sf', '--max-time', '10', `http://${SERVE_METRICS}${path}`], { encoding: 'utf8', timeout: 15_000 });
  return r.status === 0 ? r.stdout : '';
}

async function until(what: string, ok: () => boolean, ms: number, log: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}\n${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Write `text` to `path` in an agent guest, in pieces that fit the console's line buffer. */
export async function writeGuestFile(g: Guest, path: string, text: string): Promise<void> {
  const b64 = Buffer.from(text).toString('base64');
  const tmp = `${path}.b64`;
  let r = await g.exec(`rm -f ${tmp}`, 30_000);
  for (let i = 0; i < b64.length && r.rc === 0; i += 1500) r = await g.exec(`echo -n ${b64.slice(i, i + 1500)} >> ${tmp}`, 30_000);
  if (r.rc === 0) r = await g.exec(`base64 -d ${tmp} > ${path} && rm ${tmp}`, 30_000);
  if (r.rc !== 0) throw new Error(`cannot write ${path} in the guest:\n${r.out}`);
}

/** Start `node FILE` (already written) in the background in an agent guest, its output on the console. */
export function runInBackground(g: Guest, file: string, node = 'node'): number {
  const from = g.mark;
  g.send(`(${node} ${file} &)`);
  return from;
}

/** Topologies not yet closed, for signal and exit handlers (`closeAllSync`). */
const live = new Set<Made>();

/**
 * Synchronously kill every live topology's guests and serves and remove its namespaces (for a
 * bench's exit or signal handler: the serves run in process groups of their own, so a Ctrl-C at
 * the terminal does not reach them).
 */
export function closeAllSync(): void {
  for (const m of [...live]) m.killSync();
}

/** What a topology made so far, removed by `close()` (idempotent), also after a failed start. */
class Made {
  readonly ns: string[] = [];
  readonly serves: ChildProcess[] = [];
  readonly guests: Guest[] = [];
  private closed: Promise<void> | undefined;
  constructor(readonly dir: string) {
    live.add(this);
  }

  private killServes(): void {
    for (const s of this.serves) {
      try {
        if (s.pid !== undefined) process.kill(-s.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  /** SIGTERM (a clean exit, which writes a --cpu-prof profile), then wait up to 10 s. */
  private async termServes(): Promise<void> {
    const live = this.serves.filter((s) => s.exitCode === null && s.signalCode === null && s.pid !== undefined);
    for (const s of live) {
      try {
        process.kill(s.pid!, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    await Promise.all(live.map((s) => Promise.race([new Promise((r) => s.once('exit', r)), new Promise((r) => setTimeout(r, 10_000))])));
  }

  private removeRest(): void {
    for (const ns of this.ns.splice(0)) spawnSync('ip', ['netns', 'del', ns], { timeout: 10_000 });
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }

  killSync(): void {
    for (const g of this.guests) g.kill();
    this.killServes();
    this.removeRest();
  }

  close(): Promise<void> {
    return (this.closed ??= (async () => {
      for (const g of this.guests) g.kill();
      await Promise.all(this.guests.map((g) => Promise.race([g.done, new Promise((r) => setTimeout(r, 10_000))])));
      if (process.env.VMPI_SERVE_CPU_PROF_DIR) await this.termServes();
      this.killServes();
      await Promise.all(this.serves.map((s) => (s.exitCode !== null || s.signalCode !== null ? Promise.resolve() : Promise.race([new Promise((r) => s.once('exit', r)), new Promise((r) => setTimeout(r, 5000))]))));
      this.removeRest();
    })());
  }
}

export class TwoHosts {
  private constructor(
    readonly dif: string,
    readonly shimDif: string,
    readonly a: HostSide,
    readonly b: HostSide,
    private readonly made: Made,
    private readonly logsOf: () => string,
  ) {}

  /**
   * Build the whole topology: namespaces, veth, serves (B enrolled with A), both guests booted
   * with their member daemons up. On any failure everything made so far is removed and the error
   * (with the serves' logs) is thrown. `teardown` (e.g. tap's t.teardown) gets the clean-up at
   * once, so that a test ended by its timeout while this still runs removes it all too.
   */
  static async start(o: TwoHostsOptions, teardown?: (close: () => Promise<void>) => void): Promise<TwoHosts> {
    const say = o.say ?? (() => {});
    const dif = o.dif ?? 'n.DIF';
    const [idA, idB] = o.vmIds ?? [71, 72];
    const mtu = o.mtu ?? 9000;
    const dir = mkdtempSync(join(tmpdir(), `${o.name}-`));
    const made = new Made(dir);
    teardown?.(() => made.close());
    const shimDif = o.shim === 'eth' ? `eth.v${o.vlan ?? 100}` : 'udp.hosts';
    try {
      const nsA = uniqueName('vmpiha');
      const nsB = uniqueName('vmpihb');
      for (const ns of [nsA, nsB]) {
        ip('netns', 'add', ns);
        made.ns.push(ns);
        ip('-n', ns, 'link', 'set', 'lo', 'up');
      }
      const ifA = uniqueName('ha');
      const ifB = uniqueName('hb');
      ip('link', 'add', ifA, 'netns', nsA, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB, 'mtu', String(mtu));
      ip('-n', nsA, 'link', 'set', ifA, 'up');
      ip('-n', nsB, 'link', 'set', ifB, 'up');
      if (o.shim === 'udp') {
        ip('-n', nsA, 'addr', 'add', `${ADDR.a}/24`, 'dev', ifA);
        ip('-n', nsB, 'addr', 'add', `${ADDR.b}/24`, 'dev', ifB);
      }
      const keep = { keepaliveMs: o.keepaliveMs ?? 200, keepaliveTimeoutMs: o.keepaliveTimeoutMs ?? 1000 };
      const shim = (side: 'a' | 'b', iface: string, peer: string) =>
        o.shim === 'eth'
          ? { shimEth: { dif: shimDif, interface: iface, vlan: o.vlan ?? 100, allocateTimeoutMs: 5000, ...keep } }
          : // mtu: the veth's minus IPv4 and UDP headers. The default 1472 (max SDU 1467) would be too
            // small: a normal DIF member grants flows the max SDU of its own lower flows only, so
            // PDUs of SDUs above ~1435 B would be dropped at the host that relays them onto UDP.
            { shimUdp: { dif: shimDif, bind: `${ADDR[side]}:${UDP_PORT}`, peers: { [peer]: `${ADDR[side === 'a' ? 'b' : 'a']}:${UDP_PORT}` }, mtu: mtu - 28, allocateTimeoutMs: 5000, ...keep } };
      const names = { a: `${dif}.a`, b: `${dif}.b` };
      const cfgA = {
        devices: [{ socket: 'vm-a.sock', vmpiId: idA }],
        ...shim('a', ifA, names.b),
        normal: { dif, name: names.a },
      };
      const cfgB = {
        devices: [{ socket: 'vm-b.sock', vmpiId: idB }],
        ...shim('b', ifB, names.a),
        normal: { dif, name: names.b, role: 'member', enroller: names.a, acceptEnrollment: true },
      };
      writeFileSync(join(dir, 'a.json'), JSON.stringify(cfgA));
      writeFileSync(join(dir, 'b.json'), JSON.stringify(cfgB));
      const level = o.logLevel ?? 'info';
      const sA = serveIn(nsA, join(dir, 'a.json'), join(dir, 'a-ipc.sock'), level, o.serveMetrics === true);
      made.serves.push(sA.child);
      const sB = serveIn(nsB, join(dir, 'b.json'), join(dir, 'b-ipc.sock'), level, o.serveMetrics === true);
      made.serves.push(sB.child);
      const logs = (): string => `--- serve A ---\n${sA.log().slice(-3000)}\n--- serve B ---\n${sB.log().slice(-3000)}`;
      await until('both serves\' sockets', () => ['vm-a.sock', 'vm-b.sock', 'a-ipc.sock', 'b-ipc.sock'].every((f) => existsSync(join(dir, f))), 60_000, logs);
      say(`serves up in ${nsA} (${ifA}) and ${nsB} (${ifB}); booting the guests while host-B enrolls over ${shimDif}`);
      const guest = (side: 'a' | 'b', ns: string): Guest =>
        new Guest({ name: `${o.name}-vm-${side}`, sockets: [join(dir, `vm-${side}.sock`)], node: true, netns: ns, memMb: o.memMb ?? 640, timeoutMs: o.guestTimeoutMs ?? 300_000, processGroup: true });
      const gA = guest('a', nsA);
      made.guests.push(gA);
      const gB = guest('b', nsB);
      made.guests.push(gB);
      const bootMs = o.bootMs ?? 150_000;
      await Promise.all([gA.agentReady(1, bootMs), gB.agentReady(1, bootMs), until(`host-B enrolled with host-A over ${shimDif}`, () => sB.log().includes('normal DIF: enrolled'), 60_000, logs)]);
      say('guests booted; starting their members of the normal DIF');
      await Promise.all([startMember(gA, dif, names.a, o), startMember(gB, dif, names.b, o)]);
      const side = (ns: string, iface: string, s: { child: ChildProcess; log: () => string }, g: Guest, sock: string, ipcpName: string): HostSide => ({ ns, iface, ipcSocket: join(dir, sock), serve: s.child, log: s.log, guest: g, ipcpName, metrics: (path = '/metrics') => (o.serveMetrics ? serveMetricsIn(ns, path) : '') });
      return new TwoHosts(dif, shimDif, side(nsA, ifA, sA, gA, 'a-ipc.sock', names.a), side(nsB, ifB, sB, gB, 'b-ipc.sock', names.b), made, logs);
    } catch (e) {
      await made.close();
      throw e;
    }
  }

  /** The end of both serves' logs, for failure messages. */
  logs(): string {
    return this.logsOf();
  }

  /** `ip link set IFACE down|up` on that host's veth end. */
  link(side: 'a' | 'b', state: 'up' | 'down'): void {
    const h = side === 'a' ? this.a : this.b;
    ip('-n', h.ns, 'link', 'set', h.iface, state);
  }

  /** Kill guests and serves, remove the namespaces (and the veth with them) and the directory. Idempotent. */
  close(): Promise<void> {
    return this.made.close();
  }
}

/**
 * Start `vmpi guest --config` (a member of `dif` enrolling with `enroller`, its host's IPCP) in an
 * agent guest and wait for its IPC socket: up to 180 s (Node under TCG on a busy host is slow).
 */
async function startMember(g: Guest, dif: string, enroller: string, o: Pick<TwoHostsOptions, 'guestNode' | 'guestMetrics'>): Promise<void> {
  const node = o.guestNode;
  await node?.prepare(g);
  const metrics = o.guestMetrics ? { enabled: true, listen: o.guestMetrics } : { enabled: false };
  const cfg = JSON.stringify({ metrics, normal: { dif, enroller } });
  const up = [
    'mkdir -p /run/vmpi',
    `echo '${cfg}' > /tmp/vmpi-guest.json`,
    `(${node?.nodeCmd() ?? 'node'} ${GUEST_CLI} guest --config /tmp/vmpi-guest.json --log-level warn >/tmp/vmpi-guest.log 2>&1 &)`,
    // `false`, not `exit`: exit would end the agent's shell, which powers the guest off.
    'i=0; while [ ! -S /run/vmpi/ipc.sock ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done',
    '[ -S /run/vmpi/ipc.sock ] || { cat /tmp/vmpi-guest.log; false; }',
  ].join(' && ');
  const r = await g.exec(up, 240_000);
  if (r.rc !== 0) throw new Error(`vmpi guest did not start:\n${r.out}`);
}
