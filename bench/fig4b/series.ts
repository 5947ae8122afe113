/**
 * series.ts — the systems of Fig. 4b (VM → VM goodput on one host), each a Series
 * (../common/series.ts) with two guests of the same settings:
 *  - NormalDifSeries (the paper's system): a normal DIF over two shim DIFs for hypervisors, as a
 *    user runs it. One `vmpi serve` (its own process, config `normal: { dif }`) serves both VMs'
 *    VMPI devices and runs the enroller, which relays between them; each Node guest runs
 *    `vmpi guest --normal-dif` (a member that enrolls through its shim DIF). VM2 runs
 *    `vmpi tgen server`; VM1 runs a small driver on the client library that keeps one tgen flow
 *    (the flow-control QoS cube: in order, no retransmission) and does one tgen run per request
 *    from the bench. Goodput is measured by the tgen server in VM2.
 *  - UdpBridgeSeries: an emulated NIC (virtio-net-pci or e1000) in each guest, their taps joined
 *    by a Linux bridge in the bench's private network namespace; VM1 runs `udp-goodput send` to
 *    VM2's `udp-goodput recv` (a netperf UDP_STREAM-like unpaced stream).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Guest, ROOT } from '../../test/helpers/guest.js';
import { GUEST_ADDR, GUEST_MAC, GUEST2_ADDR, GUEST2_MAC, BRIDGE_PREFIX, type PrivateNet } from '../common/netns.js';
import { nicGuest, setupNic, udpStream, type NicModel } from '../common/nic.js';
import { BOOT_MS, GUEST, ROTATE, UDP_PORT_BASE, VMPI_CLI, type Measurement, type Series } from '../common/series.js';
import { hostCpuReport, hostCpuSnapshot } from '../common/host-cpu.js';
import { CPU, collectProfiles, cpuSnapshot, installProfiler, nodeCmd, reportCpu } from './guest-prof.js';

const NORMAL_DIF = 'n.DIF';
/** VMPI_IPC_RING=0: the guests' applications (the driver, the tgen server) keep the 'socket' IPC data path (default: the 'ring'). */
const RINGS = process.env.VMPI_IPC_RING !== '0';
const VM_IDS = [81, 82] as const;

/** In VM1: one tgen flow over n.DIF, one run per /tmp/fig4b-cmd written by the bench. */
const DRIVER_JS = `
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
import { DEFAULT_TGEN_APP, TgenClient } from '/opt/vmpi/dist/src/dif/tgen.js';
const out = (tag, v) => console.log('FIG4B-' + tag + ' ' + JSON.stringify(v));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const c = await IpcClient.connect('/run/vmpi/ipc.sock', { rings: ${RINGS} });
let tg = null;
const end = Date.now() + 120000;
let last = '';
while (tg === null) {
  try {
    tg = await TgenClient.open(c, '${NORMAL_DIF}', DEFAULT_TGEN_APP, { src: 'fig4b/1', qos: { reliable: false, inOrder: true } });
  } catch (e) {
    last = e.code + ': ' + e.message;
    if (Date.now() > end) { out('ERROR', { id: 0, msg: 'no tgen flow: ' + last }); process.exit(1); }
    await sleep(1000);
  }
}
out('READY', { qos: tg.flow?.qos ?? null });
const CMD = '/tmp/fig4b-cmd';
for (;;) {
  if (!existsSync(CMD)) { await sleep(20); continue; }
  const [id, size, ms] = readFileSync(CMD, 'utf8').trim().split(' ').map(Number);
  rmSync(CMD);
  try {
    const r = await tg.run({ sduSize: size, durationMs: ms, reportTimeoutMs: 10000 });
    out('RESULT', { id, mbps: r.mbps, sdus: r.sdus, bytes: r.bytes, elapsedNs: r.elapsedNs, sent: r.sent, refused: r.refused });
  } catch (e) {
    out('ERROR', { id, msg: String(e && e.message || e) });
  }
}
`;

/** The bench's `vmpi serve`: its own process, as users run it. */
function startServe(dir: string, metricsPort: number): { child: ChildProcess; log: () => string } {
  const cfg = join(dir, 'vmpi.json');
  writeFileSync(cfg, JSON.stringify({ devices: VM_IDS.map((id, i) => ({ socket: `vm${i + 1}.sock`, vmpiId: id })), normal: { dif: NORMAL_DIF } }));
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'warn' };
  delete env.NODE_OPTIONS;
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'src', 'cli.ts'), 'serve', '--config', cfg, '--ipc-socket', join(dir, 'ipc.sock'), '--metrics-listen', `127.0.0.1:${metricsPort}`], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (log = (log + s).slice(-20_000)));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log = (log + s).slice(-20_000)));
  return { child, log: () => log };
}

/** A TCP port free on loopback right now (for serve's metrics). */
function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => res(port));
    });
  });
}

async function until(what: string, ok: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Start `vmpi guest --normal-dif` in an agent guest and wait for its IPC socket. */
async function startMember(g: Guest): Promise<void> {
  await installProfiler(g);
  const up = [
    'mkdir -p /run/vmpi',
    `(${nodeCmd()} ${VMPI_CLI} guest --normal-dif ${NORMAL_DIF} --log-level warn >/tmp/vmpi-guest.log 2>&1 &)`,
    // Up to 180 s: Node's start under TCG on a busy host took over 30 s. `false`, not `exit`:
    // exit would end the agent's own shell, which powers the guest off.
    'i=0; while [ ! -S /run/vmpi/ipc.sock ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done',
    '[ -S /run/vmpi/ipc.sock ] || { cat /tmp/vmpi-guest.log; false; }',
  ].join(' && ');
  const r = await g.exec(up, 240_000);
  if (r.rc !== 0) throw new Error(`vmpi guest did not start:\n${r.out}`);
}

export class NormalDifSeries implements Series {
  readonly key = 'normal-dif';
  readonly name = 'normal DIF over shim DIFs (vmpi-tgen, flow control, no retransmission)';
  private dir = '';
  private serve: { child: ChildProcess; log: () => string } | null = null;
  private vm1: Guest | null = null;
  private vm2: Guest | null = null;
  private runs = 0;
  private metricsPort = 0;

  constructor(private readonly say: (s: string) => void = () => {}) {}

  /** The relay's counters from serve's metrics: where PDUs went (forwarded, dropped by reason). */
  private async relayCounters(): Promise<string[]> {
    try {
      const text = await (await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
      return text.split('\n').filter((l) => /^vmpi_(dif_rmt_pdus_(forwarded|dropped)_total|dif_neighbours|device_sdus_total|device_backlog)[{ ]/.test(l) && !/ 0$/.test(l));
    } catch (e) {
      return [`(no metrics: ${(e as Error).message})`];
    }
  }

  async start(): Promise<void> {
    this.dir = mkdtempSync(join(tmpdir(), 'vmpi-fig4b-'));
    this.metricsPort = await freePort();
    this.serve = startServe(this.dir, this.metricsPort);
    await until('vmpi serve sockets', () => [1, 2].every((i) => existsSync(join(this.dir, `vm${i}.sock`))), 60_000).catch((e: Error) => {
      throw new Error(`${e.message}; serve log:\n${this.serve!.log()}`);
    });
    this.vm1 = new Guest({ ...GUEST, name: 'vmpi-fig4b-vm1', sockets: [join(this.dir, 'vm1.sock')], node: true });
    this.vm2 = new Guest({ ...GUEST, name: 'vmpi-fig4b-vm2', sockets: [join(this.dir, 'vm2.sock')], node: true });
    await Promise.all([this.vm1.agentReady(1, BOOT_MS), this.vm2.agentReady(1, BOOT_MS)]);
    await Promise.all([startMember(this.vm1), startMember(this.vm2)]);
    const srv = await this.vm2.exec(`(${RINGS ? '' : 'VMPI_IPC_RING=0 '}${nodeCmd()} ${VMPI_CLI} tgen server --dif ${NORMAL_DIF} >/tmp/vmpi-tgen.log 2>&1 &)`, 30_000);
    if (srv.rc !== 0) throw new Error(`tgen server did not start in VM2:\n${srv.out}`);
    const b64 = Buffer.from(DRIVER_JS).toString('base64');
    const w = await this.vm1.exec(`echo ${b64} | base64 -d > /tmp/fig4b-driver.mjs`, 30_000);
    if (w.rc !== 0) throw new Error(`cannot write the driver in VM1:\n${w.out}`);
    const from = this.vm1.mark;
    this.vm1.send(`(${nodeCmd()} /tmp/fig4b-driver.mjs &)`);
    const ready = await Promise.race([
      this.vm1.waitJson('FIG4B-READY', 180_000, from),
      this.vm1.waitJson<{ msg: string }>('FIG4B-ERROR', 180_000, from).then((e) => Promise.reject(new Error(`VM1 driver: ${e.msg}`))),
    ]);
    void ready;
  }

  async measure(size: number, seconds: number): Promise<Measurement> {
    const g = this.vm1!;
    const id = ++this.runs;
    const ms = Math.round(seconds * 1000);
    const cpu0 = await cpuSnapshot([this.vm1!, this.vm2!]);
    const hostRoots = new Map([
      ['serve', this.serve?.child.pid],
      ['qemu-vm1', this.vm1!.proc.pid],
      ['qemu-vm2', this.vm2!.proc.pid],
    ]);
    const host0 = CPU ? hostCpuSnapshot(hostRoots) : null;
    const from = g.mark;
    const w = await g.exec(`echo "${id} ${size} ${ms}" > /tmp/fig4b-cmd.new && mv /tmp/fig4b-cmd.new /tmp/fig4b-cmd`, 30_000);
    if (w.rc !== 0) throw new Error(`cannot send the run request to VM1:\n${w.out}`);
    const re = new RegExp(`FIG4B-(RESULT|ERROR) (\\{"id":${id},[^\\r\\n]*\\})\\r?\\n`);
    const m = await g.waitFor(re, ms + 60_000, from);
    const v = JSON.parse(m[2]!) as { msg?: string; mbps: number; sdus: number; bytes: number; elapsedNs: number; sent: number; refused?: number };
    if (m[1] === 'ERROR') throw new Error(`VM1 tgen run: ${v.msg}`);
    if (CPU) this.say(`vm1 tgen client: ${v.sent} SDUs sent, ${v.refused ?? '?'} bursts refused (each waited for 'drain')`);
    if (host0 !== null && v.sdus > 0) this.say(hostCpuReport(host0, hostCpuSnapshot(hostRoots), v.sdus, size));
    await reportCpu([this.vm1!, this.vm2!], cpu0, v.sdus, size, this.say);
    const secs = v.elapsedNs / 1e9;
    return { mbps: v.mbps, pps: secs > 0 ? v.sdus / secs : 0, seconds: secs, sdus: v.sdus, bytes: v.bytes, sentPps: v.sent / seconds };
  }

  /**
   * Each guest's EFCP and RMT counters that are not zero (window stalls, closed-window queue,
   * control PDUs, losses), from its `vmpi guest` metrics as serve fetches them through the VMPI
   * (GET /metrics/guest/<vmpi-id>): does the sender wait for credit across the relay?
   */
  private async guestCounters(): Promise<void> {
    for (const [i, id] of VM_IDS.entries()) {
      try {
        const text = await (await fetch(`http://127.0.0.1:${this.metricsPort}/metrics/guest/${id}`, { signal: AbortSignal.timeout(10_000) })).text();
        const lines = text.split('\n').filter((l) => /^vmpi_dif_(efcp|rmt)/.test(l) && !/ 0$/.test(l));
        if (lines.length === 0) this.say(`vm${i + 1}: no EFCP/RMT counters in its metrics`);
        for (const l of lines) this.say(`vm${i + 1} ${l}`);
      } catch (e) {
        this.say(`vm${i + 1}: no guest metrics (${(e as Error).message})`);
      }
    }
  }

  async stop(): Promise<void> {
    if (this.serve) for (const l of await this.relayCounters()) this.say(`host relay: ${l}`);
    if (this.serve) await this.guestCounters();
    if (this.vm1) await collectProfiles(this.vm1, 'vm1', this.say);
    if (this.vm2) await collectProfiles(this.vm2, 'vm2', this.say);
    await Promise.all([this.vm1?.stop(), this.vm2?.stop()]);
    this.vm1 = this.vm2 = null;
    if (this.serve?.child.pid !== undefined) {
      try {
        process.kill(-this.serve.child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    this.serve = null;
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = '';
  }
}

export class UdpBridgeSeries implements Series {
  readonly key: string;
  readonly name: string;
  private vm1: Guest | null = null;
  private vm2: Guest | null = null;
  private runs = 0;

  constructor(
    private readonly model: NicModel,
    private readonly net: PrivateNet,
  ) {
    this.key = model === 'e1000' ? 'e1000' : 'virtio-net';
    this.name = model === 'e1000' ? 'e1000 + Linux bridge (UDP)' : 'virtio-net-pci + Linux bridge (UDP, no vhost-net)';
  }

  private guest(n: 1 | 2): Guest {
    const [tap, mac] = n === 1 ? [this.net.tap, GUEST_MAC] : [this.net.tap2, GUEST2_MAC];
    return nicGuest({ name: `vmpi-fig4b-${this.key}-${n}`, netns: this.net.ns, tap, model: this.model, mac });
  }

  /** eth0 at `addr`, and the peer's address a permanent neighbour: no ARP during a flood (busybox `ip` has no `neigh replace`; its `arp -s` makes a permanent entry). */
  private setup(g: Guest, addr: string, peer: string, peerMac: string): Promise<void> {
    return setupNic(g, this.model, addr, BRIDGE_PREFIX, [`arp -i eth0 -s ${peer} ${peerMac}`]);
  }

  async start(): Promise<void> {
    this.vm1 = this.guest(1);
    this.vm2 = this.guest(2);
    await Promise.all([this.vm1.agentReady(1, BOOT_MS), this.vm2.agentReady(1, BOOT_MS)]);
    await this.setup(this.vm1, GUEST_ADDR, GUEST2_ADDR, GUEST2_MAC);
    await this.setup(this.vm2, GUEST2_ADDR, GUEST_ADDR, GUEST_MAC);
  }

  measure(size: number, seconds: number): Promise<Measurement> {
    return udpStream(this.vm1!, this.vm2!, GUEST2_ADDR, UDP_PORT_BASE + (this.runs++ % ROTATE), size, seconds);
  }

  async stop(): Promise<void> {
    await Promise.all([this.vm1?.stop(), this.vm2?.stop()]);
    this.vm1 = this.vm2 = null;
  }
}
