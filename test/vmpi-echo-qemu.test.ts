/**
 * vmpi-echo-qemu.test.ts — the echo responder (src/vmpi/echo.ts) under `vmpi serve`'s start-up
 * (echoChannels, in-process) against real QEMU 10 (TCG) and the guest driver, driven by the
 * guest's `vmpi-perf stream` (guest-driver/tools/vmpi-perf.c): a clean run loses and duplicates
 * nothing; a run during which the server drops SDUs on purpose (the echo channel unbound for a
 * while: the guest's frames are dropped as unbound, counted by the device) reports exactly that
 * many lost and does not hang; a run during which the server stops taking frames for a while (a
 * stall, as a back-end restart looks to the guest) reports the stall as max_gap_ms and loses
 * nothing, although the guest wrote the stalled SDUs off. Needs the guest artefacts
 * (scripts/guest/build.sh); in CI their absence is a failure.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EchoResponder } from '../src/vmpi/echo.js';
import { ECHO_CHANNEL_MIN, mergeServeOptions } from '../src/ops/config.js';
import { startServing, type Serving } from '../src/ops/serve.js';
import { logger } from '../src/sys/log.js';
import { Guest, guestExit, guestUnavailable, hostCondition } from './helpers/guest.js';
import { parseResults } from './helpers/pattern.js';

const unavailable = guestUnavailable();
if (unavailable && process.env.CI) t.fail(`guest tests cannot run in CI: ${unavailable}`);

const CH = ECHO_CHANNEL_MIN + 1;
const VMPI_ID = 61;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('vmpi-perf stream against the echo responder: clean, with SDUs dropped on purpose, with a stall', { skip: unavailable ?? false, timeout: 300_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-echo-qemu-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'vm.sock');
  const plan = mergeServeOptions(undefined, { sockets: [sock], vmpiIds: [VMPI_ID], listenFds: [], echoChannels: [CH], noMetrics: true });
  const serving: Serving = await startServing(plan, { logger: logger.child({ test: 'echo-qemu' }), ipc: null });
  t.teardown(() => serving.close());
  const device = serving.host.device(VMPI_ID)!;
  let echo = serving.echoes.get(VMPI_ID)!;
  t.teardown(() => echo.close());
  const g = new Guest({ sockets: [sock], timeoutMs: 240_000 });
  t.teardown(() => g.kill());
  await g.agentReady();
  await hostCondition(() => device.isUp, 'device up');

  const stream = async (args: string, ms = 60_000) => {
    const r = await g.exec(`vmpi-perf ${args}`, ms);
    const res = parseResults(r.out).find((x) => x.kind === 'RESULT' && x.mode === 'stream');
    t.ok(res, `a RESULT line: ${r.out.trim()}`);
    return { rc: r.rc, res: res ?? {} };
  };

  // 1. Clean: every SDU back once.
  {
    const count = 20_000;
    const t0 = Date.now();
    const { rc, res } = await stream(`-w 32 stream /dev/vmpi0 ${CH} 1000 ${count}`);
    t.comment(`clean: ${count} SDUs in ${Date.now() - t0} ms (guest: ${res.sdus_per_s} SDUs/s, max_gap_ms ${res.max_gap_ms}, write_offs ${res.write_offs})`);
    t.equal(rc, 0, 'exit 0');
    t.equal(res.status, 'ok');
    t.equal(res.sent, String(count), 'sent');
    t.equal(res.unique, String(count), 'every seq came back');
    t.equal(res.received, String(count), 'received = unique');
    t.equal(res.lost, '0', 'lost=0');
    t.equal(res.dup, '0', 'dup=0');
    t.equal(res.errors, '0', 'errors=0');
    t.equal(res.badlen, '0', 'badlen=0');
    t.equal(echo.stats.echoed, count, 'the responder echoed each once');
    t.equal(echo.stats.dropped, 0);
  }

  // 2. SDUs dropped on purpose: the echo channel unbound for 300 ms mid-stream.
  {
    const count = 4000;
    const echoedBefore = echo.stats.echoed;
    const unboundBefore = device.stats.drops.unbound_channel;
    const run = stream(`-w 32 -g 100 -t 500 stream /dev/vmpi0 ${CH} 1000 ${count}`);
    await hostCondition(() => echo.stats.echoed >= echoedBefore + 1000, '1000 SDUs echoed', 60_000);
    echo.close();
    await sleep(300);
    const dropped = device.stats.drops.unbound_channel - unboundBefore;
    echo = new EchoResponder(device, [CH]);
    const t0 = Date.now();
    const { rc, res } = await run;
    t.comment(`drops: ${dropped} dropped while unbound; guest: lost ${res.lost}, max_gap_ms ${res.max_gap_ms} at ${res.gap_at_ms}, write_offs ${res.write_offs}; ended ${Date.now() - t0} ms after the rebind`);
    t.ok(dropped > 0, `the server dropped ${dropped} guest SDUs while the channel was unbound`);
    t.equal(res.lost, String(dropped), 'lost = exactly what the server dropped');
    t.equal(res.unique, String(count - dropped), 'unique = COUNT - lost');
    t.equal(res.sent, String(count), 'it sent on past the losses (no hang)');
    t.equal(res.dup, '0', 'dup=0');
    t.equal(res.errors, '0', 'errors=0');
    t.equal(res.status, 'lost');
    t.equal(rc, 2, 'exit 2 (fewer than COUNT came back)');
    t.ok(Number(res.write_offs) >= 1, `the window was written off ${res.write_offs} time(s)`);
    t.ok(Number(res.max_gap_ms) >= 250, `max_gap_ms ${res.max_gap_ms} covers the 300 ms without echoes`);
  }

  // 3. A stall without loss: the server takes no frames for 600 ms (the guest writes the window
  // off, then its tx ring fills); everything arrives late and counts as received.
  {
    const count = 4000;
    const echoedBefore = echo.stats.echoed;
    const run = stream(`-w 32 -g 100 -t 3000 stream /dev/vmpi0 ${CH} 1000 ${count}`);
    await hostCondition(() => echo.stats.echoed >= echoedBefore + 1000 && !echo.pausing, '1000 SDUs echoed', 60_000);
    // The responder is not waiting for 'drain' (so it will not resume the device), and a paused
    // device gives it no SDU that could make it wait.
    device.pause();
    await sleep(600);
    device.resume();
    const { rc, res } = await run;
    t.comment(`stall: guest max_gap_ms ${res.max_gap_ms} at ${res.gap_at_ms}, write_offs ${res.write_offs}, reordered ${res.reordered}`);
    t.equal(rc, 0, 'exit 0');
    t.equal(res.status, 'ok');
    t.equal(res.lost, '0', 'lost=0: the SDUs written off arrived late and were counted');
    t.equal(res.dup, '0', 'dup=0');
    t.equal(res.errors, '0', 'errors=0');
    t.ok(Number(res.write_offs) >= 1, `the guest wrote the window off ${res.write_offs} time(s) during the stall`);
    t.ok(Number(res.max_gap_ms) >= 550, `max_gap_ms ${res.max_gap_ms} shows the 600 ms stall`);
  }

  // 4. A device that stops taking SDUs for longer than -t: the stream ends by itself with
  // status=tx-stalled (it used to wait on a full tx ring for ever, until the harness gave up).
  {
    const count = 4000;
    const echoedBefore = echo.stats.echoed;
    const t0 = Date.now();
    const run = stream(`-w 32 -g 100 -t 1500 stream /dev/vmpi0 ${CH} 1000 ${count}`);
    await hostCondition(() => echo.stats.echoed >= echoedBefore + 1000 && !echo.pausing, '1000 SDUs echoed', 60_000);
    device.pause();
    const { rc, res } = await run;
    const took = Date.now() - t0;
    device.resume();
    t.comment(`tx stall: status ${res.status} after ${took} ms, tx_stall_ms ${res.tx_stall_ms}, sent ${res.sent}`);
    t.equal(res.status, 'tx-stalled', 'status=tx-stalled');
    t.equal(rc, 2, 'exit 2 (fewer than COUNT came back)');
    t.ok(Number(res.tx_stall_ms) >= 1500, `tx_stall_ms ${res.tx_stall_ms} ≥ the 1500 ms idle bound`);
    t.ok(Number(res.sent) < count, `it stopped sending (${res.sent} of ${count})`);
  }

  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});
