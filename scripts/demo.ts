/**
 * demo.ts — `npm run demo`: the main job end to end on this machine.
 *
 * Starts a vmpi server (what `vmpi serve` runs: one VMPI device, a shim IPC process for
 * hypervisors on it, the IPC daemon, Prometheus metrics), boots a TCG guest under QEMU 10 with the
 * guest driver and Node, runs `vmpi guest` and `vmpi tgen server` in it, and shows:
 *   1. the VMPI link: the guest's vmpi-perf streams verified SDUs to a host sink;
 *   2. the shim DIF through the IPC API at both ends: a host app allocates a flow to the guest's
 *      "echo" app and gets its SDUs back, a guest app allocates a flow to the host's "greeter"
 *      app and is answered, and vmpi-tgen measures host -> guest goodput;
 *   3. the normal DIF (n.DIF) over the shim DIFs of two VMs: a second guest registers an echo app
 *      in n.DIF, and an app in the first guest reaches it through the host's normal IPC process,
 *      which relays between the two VMs (VM1 -> host -> VM2 and back);
 *   4. the metrics a Prometheus server would scrape.
 * Then it powers the guests off and closes everything.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DifError } from '../src/dif/api.js';
import { IpcClient } from '../src/dif/ipc/client.js';
import { IpcDaemon } from '../src/dif/ipc/daemon.js';
import { ShimHvIpcp } from '../src/dif/shim-hv/ipcp.js';
import { DEFAULT_TGEN_APP, TgenClient } from '../src/dif/tgen.js';
import { HostMetrics, startMetricsServer, type MetricsServer } from '../src/ops/metrics.js';
import { createNormalIpcp } from '../src/ops/normal.js';
import { logger } from '../src/sys/log.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { Guest, guestUnavailable, nodeScript } from '../test/helpers/guest.js';
import { crc32, parseResults } from '../test/helpers/pattern.js';

const say = (s: string) => process.stdout.write(`[demo] ${s}\n`);
const hex = (n: number) => '0x' + n.toString(16).padStart(8, '0');
/** A raw VMPI channel outside the shim DIF's channel space (1..1023 by default). */
const RAW_CHANNEL = 4096;
/** The normal DIF over both VMs' shim DIFs. */
const NORMAL_DIF = 'n.DIF';

/** Runs in the guest after the VMPI stream, on the IPC client library: two apps. */
const GUEST_APP = `
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const say = (s) => console.log('GUEST-APP ' + s);
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
const difs = await c.listDifs();
const dif = difs.find((d) => d.name.startsWith('hv.'));
const reg = await c.register(dif.name, 'echo/1');
reg.on('request', async (req) => {
  const flow = await req.accept();
  say('flow request from ' + req.remoteApp.processName + ' accepted; its SDUs go ' + (flow.datapath === 'vmpi_file' ? 'straight through the driver file of its channel' : 'through ' + flow.datapath));
  flow.on('data', (sdu) => flow.write(sdu));
  flow.on('deallocated', (reason) => { say('echo flow deallocated: ' + reason); setTimeout(() => process.exit(0), 200); });
});
say('registered echo/1 in ' + dif.name + ' (address ' + dif.address + ')');
const flow = await c.allocate(dif.name, 'greeter/1', { src: 'hello-client/1' });
await flow.send(new TextEncoder().encode('hello from the guest'));
const reply = await flow.read();
say('greeter answered: "' + new TextDecoder().decode(reply) + '"');
flow.deallocate('done');
// The normal DIF: a flow to VM2's echo app, VM1 -> host -> VM2 (retried until VM2 has enrolled
// and registered it).
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let nflow = null;
let why = '';
for (const t0 = Date.now(); nflow === null && Date.now() - t0 < 120000; ) {
  try {
    nflow = await c.allocate('${NORMAL_DIF}', 'echo-vm2/1', { src: 'vm1-app/1', qos: { reliable: true, inOrder: true }, timeoutMs: 20000 });
  } catch (e) {
    why = e.code + ': ' + e.message;
    await sleep(1000);
  }
}
if (nflow === null) {
  say('normal DIF: no flow to echo-vm2/1 (' + why + ')');
} else {
  const msgs = [0, 1, 2].map((i) => 'hello VM2, SDU ' + i + ' from VM1');
  for (const m of msgs) await nflow.send(new TextEncoder().encode(m));
  let good = 0;
  for (const m of msgs) {
    const back = await Promise.race([nflow.read(), sleep(30000).then(() => null)]);
    if (back && new TextDecoder().decode(back) === m) good++;
  }
  say('normal DIF ${NORMAL_DIF}: VM1 -> host -> VM2 -> host -> VM1: ' + good + '/' + msgs.length + ' SDUs echoed by VM2, in order');
  nflow.deallocate('done');
}
`;

const VMPI_CLI = '/opt/vmpi/dist/src/cli.js';

/** The second guest: a member of n.DIF whose echo app VM1 reaches through the host. */
const VM2_APP = `
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
const reg = await c.register('${NORMAL_DIF}', 'echo-vm2/1');
reg.on('request', async (req) => {
  const flow = await req.accept();
  for await (const sdu of flow) await flow.send(sdu);
});
console.log('VM2-APP registered echo-vm2/1 in ${NORMAL_DIF}');
setInterval(() => {}, 1000);
`;

function guestScript(n: number, size: number, dif: string): string {
  return nodeScript(
    GUEST_APP,
    `vmpi-perf send /dev/vmpi0 ${RAW_CHANNEL} ${size} ${n}
mkdir -p /run/vmpi
node ${VMPI_CLI} guest --normal-dif ${NORMAL_DIF} --log-level warn &
for i in $(seq 1 900); do [ -S /run/vmpi/ipc.sock ] && break; sleep 0.1; done
node ${VMPI_CLI} tgen server --dif ${dif} >/dev/null &
`,
  );
}

async function main(): Promise<number> {
  const why = guestUnavailable();
  if (why) throw new Error(why);
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-demo-'));
  const socket = join(dir, 'vm1.sock');
  const host = new VmpiHost();
  const device = host.addDevice({ socketPath: socket, vmpiId: 1 });
  const ipcp = new ShimHvIpcp({ port: device, role: 'host', allocateTimeoutMs: 60_000 });
  const socket2 = join(dir, 'vm2.sock');
  const ipcp2 = new ShimHvIpcp({ port: host.addDevice({ socketPath: socket2, vmpiId: 2 }), role: 'host', allocateTimeoutMs: 60_000 });
  // What `vmpi serve` builds from `normal: { dif: "n.DIF" }`: the enroller over both shim DIFs.
  const normal = createNormalIpcp({ dif: NORMAL_DIF }, 'host', [ipcp, ipcp2], { logger: logger.child({ demo: true }) });
  const daemon = new IpcDaemon({ socketPath: join(dir, 'ipc.sock') });
  daemon.addIpcp(ipcp);
  daemon.addIpcp(normal);
  daemon.listen();
  const metrics = new HostMetrics(host);
  for (const i of [ipcp, ipcp2, normal]) metrics.addIpcp(i);
  let metricsServer: MetricsServer;
  try {
    metricsServer = await startMetricsServer(metrics, { host: '127.0.0.1', port: 19464 });
  } catch {
    metricsServer = await startMetricsServer(metrics, { host: '127.0.0.1', port: 0 });
  }
  say(`vmpi server: VMPI devices ${device.vmpiId} on ${socket} and 2 on ${socket2}; shim DIFs ${ipcp.difName}, ${ipcp2.difName}; normal DIF ${NORMAL_DIF} over both; IPC daemon on ${daemon.socketPath}; metrics on ${metricsServer.url}`);
  const apps = await IpcClient.connect(daemon.socketPath);

  // Host applications: a sink for the raw VMPI stream (a channel the shim DIF does not use) and
  // a greeter registered in the shim DIF.
  let sinkSdus = 0;
  let sinkCrc = 0;
  device.bind(RAW_CHANNEL, (sdu) => {
    sinkSdus++;
    sinkCrc = crc32(sdu, sinkCrc);
  });
  const greeter = await apps.register(ipcp.difName, 'greeter/1');
  greeter.on('request', (req) => {
    void req.accept().then((flow) =>
      flow.on('data', (sdu) => {
        say(`host greeter got "${new TextDecoder().decode(sdu)}" from guest app ${req.remoteApp.processName}`);
        flow.write(new TextEncoder().encode('hello from the host'));
      }),
    );
  });

  const n = 2000;
  const size = 4000;
  const g = new Guest({ sockets: [socket], node: true, memMb: 768, script: guestScript(n, size, ipcp.difName), name: 'vmpi-demo-guest', timeoutMs: 300_000 });
  const g2 = new Guest({ sockets: [socket2], node: true, memMb: 768, script: nodeScript(VM2_APP, `mkdir -p /run/vmpi
node ${VMPI_CLI} guest --normal-dif ${NORMAL_DIF} --log-level warn &
for i in $(seq 1 900); do [ -S /run/vmpi/ipc.sock ] && break; sleep 0.1; done
`), name: 'vmpi-demo-guest2', timeoutMs: 300_000 });
  let ok = false;
  try {
    say('booting two TCG guests under QEMU 10 with the VMPI driver and Node (qemu-configs/launch-guest.sh --node) ...');
    const t0 = Date.now();
    const sent = await g.waitFor(/RESULT mode=send .*status=\S+\s/, 240_000);
    const sres = parseResults(sent[0])[0]!;
    while (sinkSdus < n) await new Promise((r) => setTimeout(r, 10));
    const streamOk = sres.status === 'ok' && sres.crc32 === hex(sinkCrc);
    say(`guest up and streaming after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    say(`VMPI guest -> host: ${n} SDUs of ${size} B on channel ${RAW_CHANNEL} at ${Number(sres.mbps).toFixed(0)} Mb/s (TCG), CRC-32 ${streamOk ? 'matches' : 'MISMATCH'}`);

    await g.waitFor(/GUEST-APP registered echo\/1/, 120_000);
    const flow = await apps.allocate(ipcp.difName, 'echo/1', { src: 'demo-client/1' });
    say(`shim DIF: host app demo-client allocated a flow to guest app echo/1 (port ${flow.portId}) through the IPC daemon`);
    const sizes = [0, 1, 250, 1000, 4000];
    for (const s of sizes) flow.write(new Uint8Array(s).fill(s & 0xff));
    let echoed = 0;
    for (const s of sizes) {
      const back = await flow.read();
      if (back && back.byteLength === s && back.every((v) => v === (s & 0xff))) echoed++;
    }
    say(`shim DIF host -> guest -> host: ${echoed}/${sizes.length} SDUs (0..4000 B) echoed back intact`);
    // Whole console lines only: the serial console can deliver a line in pieces.
    await g.waitFor(/GUEST-APP greeter answered: "[^"\n]*"\r?\n/, 60_000);
    say(`shim DIF guest -> host -> guest: ${/GUEST-APP (greeter answered: "[^"\n]*")/.exec(g.output)![1]!}`);
    const accepted = await g.waitFor(/GUEST-APP (flow request from [^\r\n]*)\r?\n/, 60_000);
    say(`guest: ${accepted[1]!.trim()}`);

    // vmpi-tgen (the paper's rina-tgen): host -> guest goodput, measured by the guest's server.
    const tgen = await openTgen(apps, ipcp.difName);
    const rates: string[] = [];
    for (const s of [1000, 4000]) {
      const r = await tgen.run({ sduSize: s, durationMs: 1000, reportTimeoutMs: 10_000 });
      rates.push(`${s} B: ${r.mbps.toFixed(0)} Mb/s (${r.sdus} SDUs)`);
    }
    await tgen.close();
    say(`vmpi-tgen host -> guest over the shim DIF, 1 s each (TCG): ${rates.join(', ')}; full sweep: npm run bench:fig4a`);
    await g2.waitFor(/VM2-APP registered[^\r\n]*\r?\n/, 120_000);
    say(`guest 2: ${/VM2-APP (registered[^\r\n]*)/.exec(g2.output)![1]!}`);
    const vm2vm = await g.waitFor(/GUEST-APP (normal DIF[^\r\n]*)\r?\n/, 180_000);
    say(vm2vm[1]!);
    const vmToVmOk = /: 3\/3 SDUs/.test(vm2vm[1]!);
    flow.deallocate('demo done');
    await g.waitFor(/VMPI-GUEST-EXIT \d+/, 60_000);

    const scrape = await metrics.metrics();
    const lines = scrape.split('\n').filter((l) => /^vmpi_(device_(sdus|bytes)_total|device_up|vhost_user_connections|dif_flow_allocations_total|dif_sdus_total|dif_rmt_pdus_forwarded_total|dif_neighbours)\{/.test(l) && !/^vmpi_dif_flow_allocations_total\{.*\} 0$/.test(l));
    say(`metrics (curl ${metricsServer.url}; allocation outcomes that stayed 0 left out):`);
    for (const l of lines) say(`  ${l}`);
    ok = streamOk && echoed === sizes.length && vmToVmOk;
  } finally {
    g.kill();
    g2.kill();
    await Promise.all([g.done, g2.done]);
    apps.close();
    daemon.close();
    normal.close();
    ipcp.close('demo over');
    ipcp2.close('demo over');
    await metricsServer.close();
    host.close();
    rmSync(dir, { recursive: true, force: true });
    say('guest powered off, server closed');
  }
  say(ok ? 'demo OK' : 'demo FAILED');
  return ok ? 0 : 1;
}

/** A tgen client flow to the guest's server, once it has registered (it starts after Node loads it). */
async function openTgen(apps: IpcClient, dif: string): Promise<TgenClient> {
  const end = Date.now() + 60_000;
  for (;;) {
    try {
      return await TgenClient.open(apps, dif, DEFAULT_TGEN_APP, { src: 'demo-tgen/1' });
    } catch (e) {
      if (!(e instanceof DifError && e.code === 'rejected') || Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

main().then(
  (rc) => {
    process.exitCode = rc;
  },
  (e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  },
);
