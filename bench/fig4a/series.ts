/**
 * series.ts — the systems of Fig. 4a (host → VM goodput), each a Series (../common/series.ts).
 *
 *  - TgenShimSeries (the paper's system): the shim DIF for hypervisors with vmpi-tgen over the
 *    IPC API at both ends, as a user runs it. Host: VmpiHost + shim IPC process + IPC daemon in
 *    this process (what `vmpi serve` runs), the tgen client on the client library. Guest: Node
 *    runs `vmpi guest` (shim IPC process over /dev/vmpi0 + IPC daemon) and `vmpi tgen server`,
 *    which reads its flow's driver file directly. Goodput is measured by the tgen server.
 *  - UdpNicSeries: an emulated NIC (virtio-net-pci or e1000) on a tap in the bench's private
 *    network namespace; the guest runs `udp-goodput recv`, the host (inside the namespace) runs
 *    `udp-goodput send` with the same static binary: a netperf UDP_STREAM-like unpaced stream.
 *  - ShimVmpiSeries ('vmpi-channel', optional): no DIF, one VMPI device served by VmpiHost in this process; the host sends SDUs on
 *    channel 2 as fast as backpressure allows (SendResult.Full → wait for 'drain'); the guest
 *    reads /dev/vmpi0 with `udp-goodput vmpi-recv` (the same receive loop and window as the UDP
 *    receiver: one read per SDU, payload not inspected) or, with receiver 'vmpi-perf', with
 *    `vmpi-perf recv` (which verifies the pattern and CRC of every SDU, so it is slower per byte).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as yieldLoop } from 'node:timers/promises';
import { SendResult, type VmpiDevice } from '../../src/vmpi/device.js';
import { VmpiHost } from '../../src/vmpi/host.js';
import { DifError } from '../../src/dif/api.js';
import { IpcClient } from '../../src/dif/ipc/client.js';
import { IpcDaemon } from '../../src/dif/ipc/daemon.js';
import { ShimHvIpcp } from '../../src/dif/shim-hv/ipcp.js';
import { DEFAULT_TGEN_APP, TgenClient } from '../../src/dif/tgen.js';
import { Guest } from '../../test/helpers/guest.js';
import { parseResults, patternSdu } from '../../test/helpers/pattern.js';
import { BOOT_MS, fromRecord, GUEST, IDLE_MS, liveSenders, record, ROTATE, UDP_PORT_BASE, VMPI_CLI, WAIT_MS, type Measurement, type Series } from '../common/series.js';
import { GUEST_ADDR, GUEST_MAC, PREFIX, type PrivateNet } from '../common/netns.js';
import { nicGuest, setupNic, type NicModel } from '../common/nic.js';

/** SDUs of the raw VMPI channel series go on channel CHANNEL_BASE + (run % ROTATE). */
const CHANNEL_BASE = 2;

export class UdpNicSeries implements Series {
  readonly key: string;
  readonly name: string;
  private guest: Guest | null = null;
  private runs = 0;

  constructor(
    private readonly model: NicModel,
    private readonly net: PrivateNet,
    /** udp-goodput on the host (the static build, .cache/guest/udp-goodput). */
    private readonly goodputBin: string,
    /** nice(1) increment of the unpaced sender (0: none). */
    private readonly senderNice = 0,
  ) {
    this.key = model === 'e1000' ? 'e1000' : 'virtio-net';
    this.name = model === 'e1000' ? 'e1000 (UDP, emulated NIC)' : 'virtio-net-pci (UDP, no vhost-net)';
  }

  async start(): Promise<void> {
    this.guest = nicGuest({ name: `vmpi-fig4a-${this.key}`, netns: this.net.ns, tap: this.net.tap, model: this.model, mac: GUEST_MAC });
    await this.guest.agentReady(1, BOOT_MS);
    await setupNic(this.guest, this.model, GUEST_ADDR, PREFIX);
  }

  async measure(size: number, seconds: number): Promise<Measurement> {
    const g = this.guest!;
    const ms = Math.round(seconds * 1000);
    const port = UDP_PORT_BASE + (this.runs++ % ROTATE);
    const job = g.start(`udp-goodput -w ${WAIT_MS} -t ${IDLE_MS} recv ${port} ${ms}`, WAIT_MS + ms + 60_000);
    await g.waitFor(new RegExp(`READY mode=recv port=${port}\\b`), 30_000, job.from);
    // The sender runs until the guest reports (SIGTERM), with a generous cap.
    const send = [this.goodputBin, 'send', GUEST_ADDR, String(port), String(size), String(ms + 60_000)];
    const [cmd, ...argv] = this.net.exec(this.senderNice ? ['nice', '-n', String(this.senderNice), ...send] : send);
    const sender = spawn(cmd!, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveSenders.add(sender);
    let sout = '';
    sender.stdout.on('data', (d: Buffer) => (sout += d.toString()));
    sender.stderr.on('data', (d: Buffer) => (sout += d.toString()));
    const senderExit = new Promise<void>((res) =>
      sender.on('exit', () => {
        liveSenders.delete(sender);
        res();
      }),
    );
    try {
      const m = await g.waitFor(/RESULT mode=recv [^\n]*status=\S+\s/, WAIT_MS + ms + 60_000, job.from);
      sender.kill('SIGTERM');
      let res: Measurement;
      try {
        res = fromRecord(record(m[0], 'recv'), size);
      } catch (e) {
        await senderExit;
        throw new Error(`${(e as Error).message}; host sender said: ${sout.trim() || '(nothing)'}`);
      }
      await senderExit;
      const s = parseResults(sout).find((x) => x.kind === 'RESULT' && x.mode === 'send');
      if (s) res.sentPps = Number(s.pps);
      const done = await job.done;
      if (done.rc !== 0) throw new Error(`udp-goodput recv exited ${done.rc}:\n${done.out}`);
      return res;
    } finally {
      if (sender.exitCode === null && sender.signalCode === null) sender.kill('SIGKILL');
    }
  }

  async stop(): Promise<void> {
    await this.guest?.stop();
    this.guest = null;
  }
}

export type ShimReceiver = 'udp-goodput' | 'vmpi-perf';

export class ShimVmpiSeries implements Series {
  readonly key = 'vmpi-channel';
  readonly name: string;
  private guest: Guest | null = null;
  private host: VmpiHost | null = null;
  private device: VmpiDevice | null = null;
  private dir = '';
  private runs = 0;

  constructor(private readonly receiver: ShimReceiver = 'udp-goodput') {
    this.name = `raw VMPI channel (no DIF; ${receiver === 'vmpi-perf' ? 'vmpi-perf' : 'udp-goodput vmpi-recv'} in C)`;
  }

  async start(): Promise<void> {
    this.dir = mkdtempSync(join(tmpdir(), 'vmpi-fig4a-'));
    this.host = new VmpiHost();
    const sock = join(this.dir, 'vm.sock');
    this.device = this.host.addDevice({ socketPath: sock, vmpiId: 1 });
    this.guest = new Guest({ ...GUEST, name: 'vmpi-fig4a-shim', sockets: [sock] });
    await this.guest.agentReady(1, BOOT_MS);
    const r = await this.guest.exec('ls /dev/vmpi0');
    if (r.rc !== 0) throw new Error(`no /dev/vmpi0 in the guest:\n${r.out}`);
  }

  async measure(size: number, seconds: number): Promise<Measurement> {
    const g = this.guest!;
    const dev = this.device!;
    const ms = Math.round(seconds * 1000);
    const perf = this.receiver === 'vmpi-perf';
    const CHANNEL = CHANNEL_BASE + (this.runs++ % ROTATE);
    // Let the previous measurement's leftovers (host backlog) reach the guest, which drops them.
    for (let i = 0; i < 100 && dev.stats.backlogSdus > 0; i++) await new Promise((r) => setTimeout(r, 20));
    const cmd = perf
      ? `vmpi-perf -t 1000 recv /dev/vmpi0 ${CHANNEL} ${size} 4000000000`
      : `udp-goodput -w ${WAIT_MS} -t ${IDLE_MS} vmpi-recv /dev/vmpi0 ${CHANNEL} ${ms}`;
    const job = g.start(cmd, WAIT_MS + ms + 60_000);
    await g.waitFor(new RegExp(`READY mode=(vmpi-recv|recv) dev=/dev/vmpi0 channel=${CHANNEL}\\b`), 30_000, job.from);
    const resultRe = new RegExp(`RESULT mode=(vmpi-recv|recv) dev=/dev/vmpi0 channel=${CHANNEL} [^\\n]*status=\\S+\\s`);
    let reported = false;
    const result = g.waitFor(resultRe, WAIT_MS + ms + 60_000, job.from).finally(() => (reported = true));
    result.catch(() => {});

    // Keep the guest's rx ring full: send until refused, then wait for 'drain'. vmpi-perf needs
    // its pattern (seq in bytes 0..3); udp-goodput ignores the payload, the cost is the same.
    const sdus = Array.from({ length: 256 }, (_, i) => patternSdu(CHANNEL, i, size));
    const t0 = performance.now();
    // udp-goodput closes its window itself: send until it reports. vmpi-perf counts SDUs until
    // it sees none for 1 s: send for the window's length.
    const until = t0 + (perf ? ms : ms + WAIT_MS);
    let sent = 0;
    while (!reported && performance.now() < until) {
      for (let k = 0; k < 256 && !reported; ) {
        const sdu = sdus[sent & 255]!;
        if (size >= 8) new DataView(sdu.buffer).setUint32(0, sent, true);
        if (dev.send(CHANNEL, sdu) === SendResult.Full) {
          await Promise.race([
            new Promise<void>((res) => dev.once('drain', res)),
            result.then(() => {}, () => {}),
            new Promise((res) => setTimeout(res, 500)),
          ]);
          continue;
        }
        sent++;
        k++;
      }
      await yieldLoop();
    }
    const sentSeconds = (performance.now() - t0) / 1000;
    const m = await result;
    const rec = record(m[0], perf ? 'recv' : 'vmpi-recv');
    if (perf && rec.status !== 'ok' && rec.status !== 'timeout') throw new Error(`vmpi-perf: status ${rec.status}`);
    const res = fromRecord(rec, size);
    res.sentPps = sent / sentSeconds;
    const done = await job.done;
    // vmpi-perf exits 2 when its idle timeout ends the run (expected here).
    if (done.rc !== 0 && !(perf && done.rc === 2)) throw new Error(`${cmd} exited ${done.rc}:\n${done.out}`);
    return res;
  }

  async stop(): Promise<void> {
    await this.guest?.stop();
    this.guest = null;
    this.host?.close();
    this.host = null;
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = '';
  }
}

/** The VMPI-id of the bench's device, and so the shim DIF's name. */
const TGEN_VMPI_ID = 1;
const TGEN_DIF = `hv.vmpi-${TGEN_VMPI_ID}`;

export class TgenShimSeries implements Series {
  readonly key = 'shim-dif';
  readonly name = 'shim DIF for hypervisors (vmpi-tgen, IPC API)';
  private guest: Guest | null = null;
  private host: VmpiHost | null = null;
  private ipcp: ShimHvIpcp | null = null;
  private daemon: IpcDaemon | null = null;
  private client: IpcClient | null = null;
  private tgen: TgenClient | null = null;
  private dir = '';

  async start(): Promise<void> {
    this.dir = mkdtempSync(join(tmpdir(), 'vmpi-fig4a-'));
    this.host = new VmpiHost();
    const sock = join(this.dir, 'vm.sock');
    const device = this.host.addDevice({ socketPath: sock, vmpiId: TGEN_VMPI_ID });
    this.ipcp = new ShimHvIpcp({ port: device, role: 'host', allocateTimeoutMs: 30_000 });
    this.daemon = new IpcDaemon({ socketPath: join(this.dir, 'ipc.sock') });
    this.daemon.addIpcp(this.ipcp);
    this.daemon.listen();
    this.guest = new Guest({ ...GUEST, name: 'vmpi-fig4a-shim', sockets: [sock], node: true });
    await this.guest.agentReady(1, BOOT_MS);
    const up = [
      'mkdir -p /run/vmpi',
      `(node ${VMPI_CLI} guest --log-level warn >/tmp/vmpi-guest.log 2>&1 &)`,
      'i=0; while [ ! -S /run/vmpi/ipc.sock ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done',
      '[ -S /run/vmpi/ipc.sock ] || { cat /tmp/vmpi-guest.log; exit 1; }',
      `(node ${VMPI_CLI} tgen server --dif ${TGEN_DIF} >/tmp/vmpi-tgen.log 2>&1 &)`,
    ].join(' && ');
    const r = await this.guest.exec(up, 120_000);
    if (r.rc !== 0) throw new Error(`vmpi guest / tgen server did not start in the guest:\n${r.out}`);
    this.client = await IpcClient.connect(this.daemon.socketPath);
    // The server registers once Node has loaded it: retry while the guest says it does not know it.
    const end = Date.now() + 120_000;
    for (;;) {
      try {
        this.tgen = await TgenClient.open(this.client, TGEN_DIF, DEFAULT_TGEN_APP, { src: 'fig4a/1' });
        break;
      } catch (e) {
        if (!(e instanceof DifError && e.code === 'rejected') || Date.now() > end) throw e;
        await new Promise((res) => setTimeout(res, 500));
      }
    }
  }

  async measure(size: number, seconds: number): Promise<Measurement> {
    const r = await this.tgen!.run({ sduSize: size, durationMs: Math.round(seconds * 1000), reportTimeoutMs: 10_000 });
    const secs = r.elapsedNs / 1e9;
    return { mbps: r.mbps, pps: secs > 0 ? r.sdus / secs : 0, seconds: secs, sdus: r.sdus, bytes: r.bytes, sentPps: r.sent / seconds };
  }

  async stop(): Promise<void> {
    await this.tgen?.close().catch(() => {});
    this.client?.close();
    this.daemon?.close();
    this.ipcp?.close();
    await this.guest?.stop();
    this.host?.close();
    this.tgen = null;
    this.client = null;
    this.daemon = null;
    this.ipcp = null;
    this.guest = null;
    this.host = null;
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
