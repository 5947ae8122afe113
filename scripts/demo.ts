/**
 * demo.ts — `npm run demo`: the main job end to end on this machine.
 *
 * Starts a vmpi server with one VMPI device, boots a TCG guest under QEMU 10 with the guest
 * driver, and moves SDUs both ways: the guest's vmpi-perf sends a verified stream to a host sink,
 * the host sends a verified stream to the guest, and a round-trip loop runs against a host echo.
 * Prints what happened, where the metrics are, and shuts everything down.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SendResult } from '../src/vmpi/device.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { Guest, guestUnavailable } from '../test/helpers/guest.js';
import { crc32, parseResults, patternSdu } from '../test/helpers/pattern.js';

const say = (s: string) => process.stdout.write(`[demo] ${s}\n`);

async function main(): Promise<number> {
  const why = guestUnavailable();
  if (why) throw new Error(why);
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-demo-'));
  const socket = join(dir, 'vm1.sock');
  const host = new VmpiHost();
  const device = host.addDevice({ socketPath: socket, vmpiId: 1 });
  say(`vmpi server: VMPI device ${device.vmpiId} listening on ${socket}`);

  // Host applications: a sink on channel 1 (checks the guest's stream), an echo on channel 3.
  let sinkSdus = 0;
  let sinkCrc = 0;
  device.bind(1, (sdu) => {
    sinkSdus++;
    sinkCrc = crc32(sdu, sinkCrc);
  });
  device.bind(3, (sdu, ch) => {
    device.send(ch, sdu);
  });

  const g = new Guest({ sockets: [socket], name: 'vmpi-demo-guest', timeoutMs: 300_000 });
  let rc = 1;
  try {
    say('booting a TCG guest under QEMU 10 (qemu-configs/launch-guest.sh) ...');
    const t0 = Date.now();
    await g.agentReady();
    say(`guest up in ${((Date.now() - t0) / 1000).toFixed(1)} s; driver ${device.isUp ? 'bound' : 'not bound yet'}`);
    const info = await g.exec('vmpi-perf info /dev/vmpi0');
    say(`guest sees: ${info.out.trim().split('\n').find((l) => l.startsWith('INFO')) ?? info.out.trim()}`);

    const n = 2000;
    const size = 4000;
    const send = await g.exec(`vmpi-perf send /dev/vmpi0 1 ${size} ${n}`);
    const sres = parseResults(send.out).find((r) => r.kind === 'RESULT')!;
    while (sinkSdus < n) await new Promise((r) => setTimeout(r, 10));
    const crcOk = sres.crc32 === '0x' + sinkCrc.toString(16).padStart(8, '0');
    say(`guest -> host: ${n} SDUs of ${size} B on channel 1, ${Number(sres.mbps).toFixed(0)} Mb/s, CRC-32 ${crcOk ? 'matches' : 'MISMATCH'}`);

    const from = g.mark;
    g.send(`vmpi-perf -t 20000 recv /dev/vmpi0 2 ${size} 500`);
    await g.waitFor(/READY mode=recv dev=\/dev\/vmpi0 channel=2\b/, 30_000, from);
    let hcrc = 0;
    for (let i = 0; i < 500; ) {
      const sdu = patternSdu(2, i, size);
      if (device.send(2, sdu) === SendResult.Full) {
        await new Promise<void>((r) => device.once('drain', r));
        continue;
      }
      hcrc = crc32(sdu, hcrc);
      i++;
    }
    const m = await g.waitFor(/RESULT mode=recv dev=\/dev\/vmpi0 channel=2 .*status=\S+\s/, 60_000, from);
    const rres = parseResults(m[0])[0]!;
    const rOk = rres.status === 'ok' && rres.crc32 === '0x' + hcrc.toString(16).padStart(8, '0');
    say(`host -> guest: ${rres.sdus} SDUs of ${size} B on channel 2, status ${rres.status}, CRC-32 ${rOk ? 'matches' : 'MISMATCH'}`);

    const loop = await g.exec('vmpi-perf -w 16 loop /dev/vmpi0 3 1000 1000');
    const lres = parseResults(loop.out).find((r) => r.kind === 'RESULT')!;
    say(`round trip via host echo on channel 3: ${lres.sdus} SDUs of 1000 B, status ${lres.status}`);

    const s = device.stats;
    say(`device stats: from guest ${s.fromGuest.sdus} SDUs / ${s.fromGuest.bytes} B, to guest ${s.toGuest.sdus} SDUs / ${s.toGuest.bytes} B, drops ${JSON.stringify(s.drops)}, kicks ${s.kicks}, calls ${s.calls}`);
    rc = crcOk && rOk && lres.status === 'ok' ? 0 : 1;
  } finally {
    g.send('poweroff -f');
    await Promise.race([g.done, new Promise((r) => setTimeout(r, 5000))]);
    g.kill();
    host.close();
    rmSync(dir, { recursive: true, force: true });
    say('guest powered off, server closed');
  }
  say(rc === 0 ? 'demo OK' : 'demo FAILED');
  return rc;
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
