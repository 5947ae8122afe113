/**
 * demo.ts — `npm run demo`: the main job end to end on this machine.
 *
 * Starts a vmpi server (one VMPI device, a shim IPC process for hypervisors on it, Prometheus
 * metrics), boots a TCG guest under QEMU 10 with the guest driver and Node, and shows:
 *   1. the VMPI link: the guest's vmpi-perf streams verified SDUs to a host sink;
 *   2. the shim DIF: a host app allocates a flow to the guest's "echo" app and gets its SDUs back,
 *      and a guest app allocates a flow to the host's "greeter" app and is answered;
 *   3. the metrics a Prometheus server would scrape.
 * Then it powers the guest off and closes everything.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ShimHvIpcp } from '../src/dif/shim-hv/ipcp.js';
import { HostMetrics, startMetricsServer, type MetricsServer } from '../src/ops/metrics.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { Guest, guestUnavailable } from '../test/helpers/guest.js';
import { crc32, parseResults } from '../test/helpers/pattern.js';

const say = (s: string) => process.stdout.write(`[demo] ${s}\n`);
const hex = (n: number) => '0x' + n.toString(16).padStart(8, '0');
/** A raw VMPI channel outside the shim DIF's channel space (1..1023 by default). */
const RAW_CHANNEL = 4096;

/** Runs in the guest after the VMPI stream: the guest's shim IPC process and two apps. */
const GUEST_APP = `
import { GuestVmpiPort } from '/opt/vmpi/dist/src/vmpi/guest-port.js';
import { ShimHvIpcp } from '/opt/vmpi/dist/src/dif/shim-hv/ipcp.js';
const say = (s) => console.log('GUEST-APP ' + s);
const ipcp = new ShimHvIpcp({ port: new GuestVmpiPort(0), role: 'guest' });
ipcp.register('echo/1', (req) => {
  say('flow request from ' + req.remoteApp.processName + ' accepted');
  const flow = req.accept();
  flow.on('data', (sdu) => flow.write(sdu));
  flow.on('deallocated', (reason) => { say('echo flow deallocated: ' + reason); setTimeout(() => process.exit(0), 200); });
});
say('registered echo/1 in ' + ipcp.difName + ' (address ' + ipcp.address + ')');
const flow = await ipcp.allocateFlow('hello-client/1', 'greeter/1');
await flow.send(new TextEncoder().encode('hello from the guest'));
const reply = await flow.read();
say('greeter answered: "' + new TextDecoder().decode(reply) + '"');
flow.deallocate('done');
`;

function guestScript(n: number, size: number): string {
  return `vmpi-perf send /dev/vmpi0 ${RAW_CHANNEL} ${size} ${n}
cat > /tmp/app.mjs <<'VMPI_JS_EOF'
${GUEST_APP}
VMPI_JS_EOF
node /tmp/app.mjs
`;
}

async function main(): Promise<number> {
  const why = guestUnavailable();
  if (why) throw new Error(why);
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-demo-'));
  const socket = join(dir, 'vm1.sock');
  const host = new VmpiHost();
  const device = host.addDevice({ socketPath: socket, vmpiId: 1 });
  const ipcp = new ShimHvIpcp({ port: device, role: 'host', allocateTimeoutMs: 60_000 });
  const metrics = new HostMetrics(host);
  metrics.addIpcp(ipcp);
  let metricsServer: MetricsServer;
  try {
    metricsServer = await startMetricsServer(metrics, { host: '127.0.0.1', port: 9464 });
  } catch {
    metricsServer = await startMetricsServer(metrics, { host: '127.0.0.1', port: 0 });
  }
  say(`vmpi server: VMPI device ${device.vmpiId} on ${socket}; shim DIF ${ipcp.difName}; metrics on ${metricsServer.url}`);

  // Host applications: a sink for the raw VMPI stream (a channel the shim DIF does not use) and
  // a greeter registered in the shim DIF.
  let sinkSdus = 0;
  let sinkCrc = 0;
  device.bind(RAW_CHANNEL, (sdu) => {
    sinkSdus++;
    sinkCrc = crc32(sdu, sinkCrc);
  });
  ipcp.register('greeter/1', (req) => {
    const flow = req.accept();
    flow.on('data', (sdu) => {
      say(`host greeter got "${new TextDecoder().decode(sdu)}" from guest app ${req.remoteApp.processName}`);
      flow.write(new TextEncoder().encode('hello from the host'));
    });
  });

  const n = 2000;
  const size = 4000;
  const g = new Guest({ sockets: [socket], node: true, memMb: 768, script: guestScript(n, size), name: 'vmpi-demo-guest', timeoutMs: 300_000 });
  let ok = false;
  try {
    say('booting a TCG guest under QEMU 10 with the VMPI driver and Node (qemu-configs/launch-guest.sh --node) ...');
    const t0 = Date.now();
    const sent = await g.waitFor(/RESULT mode=send .*status=\S+\s/, 240_000);
    const sres = parseResults(sent[0])[0]!;
    while (sinkSdus < n) await new Promise((r) => setTimeout(r, 10));
    const streamOk = sres.status === 'ok' && sres.crc32 === hex(sinkCrc);
    say(`guest up and streaming after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    say(`VMPI guest -> host: ${n} SDUs of ${size} B on channel ${RAW_CHANNEL} at ${Number(sres.mbps).toFixed(0)} Mb/s (TCG), CRC-32 ${streamOk ? 'matches' : 'MISMATCH'}`);

    await g.waitFor(/GUEST-APP registered echo\/1/, 120_000);
    const flow = await ipcp.allocateFlow('demo-client/1', 'echo/1');
    say(`shim DIF: host app demo-client allocated a flow to guest app echo/1 (port ${flow.portId})`);
    const sizes = [0, 1, 250, 1000, 4000];
    for (const s of sizes) flow.write(new Uint8Array(s).fill(s & 0xff));
    let echoed = 0;
    for (const s of sizes) {
      const back = await flow.read();
      if (back && back.byteLength === s && back.every((v) => v === (s & 0xff))) echoed++;
    }
    say(`shim DIF host -> guest -> host: ${echoed}/${sizes.length} SDUs (0..4000 B) echoed back intact`);
    await g.waitFor(/GUEST-APP greeter answered.*/, 60_000);
    say(`shim DIF guest -> host -> guest: ${/GUEST-APP (greeter answered.*)/.exec(g.output)![1]!.trim()}`);
    flow.deallocate('demo done');
    await g.waitFor(/VMPI-GUEST-EXIT \d+/, 60_000);

    const scrape = await metrics.metrics();
    const lines = scrape.split('\n').filter((l) => /^vmpi_(device_(sdus|bytes)_total|device_up|vhost_user_connections|dif_flow_allocations_total|dif_sdus_total)\{/.test(l));
    say(`metrics (curl ${metricsServer.url}):`);
    for (const l of lines) say(`  ${l}`);
    ok = streamOk && echoed === sizes.length;
  } finally {
    g.kill();
    await g.done;
    ipcp.close('demo over');
    await metricsServer.close();
    host.close();
    rmSync(dir, { recursive: true, force: true });
    say('guest powered off, server closed');
  }
  say(ok ? 'demo OK' : 'demo FAILED');
  return ok ? 0 : 1;
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
