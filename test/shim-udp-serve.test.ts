/**
 * Two `vmpi serve` processes on one machine, no VM, configured only by their config files: each
 * runs a shim-udp IPC process on 127.0.0.1 (distinct ports) and a normal DIF over it (A the
 * enroller, B a member). `vmpi tgen` server on A and client on B carry SDUs of 0..1400 bytes
 * over (a) the shim-udp DIF alone and (b) the normal DIF over it, every SDU counted at the
 * server; IPC clients of the test check the bytes are intact over both; `vmpi dif show` dumps
 * the shim-udp IPC process; then A is killed (SIGKILL) and B's flow over the shim-udp DIF ends
 * with cause 'peer' within keepaliveTimeoutMs + keepaliveMs (the documented bound).
 */
import type { ChildProcess } from 'node:child_process';
import t from 'tap';
import { IpcClient } from '../src/dif/ipc/client.js';
import { until } from './helpers/serve.js';
import { cli, freePort, tgenServer, twoServes } from './helpers/two-serves.js';

const KEEPALIVE_MS = 200;
const KEEPALIVE_TIMEOUT_MS = 1000;

t.test('two serve processes, shim-udp on loopback and a normal DIF over it', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const udp = { dif: 'udp.lo', keepaliveMs: KEEPALIVE_MS, keepaliveTimeoutMs: KEEPALIVE_TIMEOUT_MS };
  const { a, b, sockA, sockB, both } = await twoServes(
    t,
    'shim-udp-serve',
    // A offers no shared-memory rings (ipc.maxRingBytes 0): its applications keep the socket data path, B's get rings.
    { shimUdp: { ...udp, bind: `127.0.0.1:${pa}`, peers: { 'n.DIF.b': `127.0.0.1:${pb}` } }, normal: { dif: 'n.DIF', name: 'n.DIF.a' }, ipc: { maxRingBytes: 0 } },
    {
      shimUdp: { ...udp, bind: `127.0.0.1:${pb}`, peers: { 'rina-tgen': `127.0.0.1:${pa}`, check: `127.0.0.1:${pa}`, 'n.DIF.a': `127.0.0.1:${pa}` } },
      normal: { dif: 'n.DIF', name: 'n.DIF.b', role: 'member', enroller: 'n.DIF.a' },
    },
  );
  await until('B enrolled in n.DIF', () => b.log().includes('normal DIF: enrolled'), 30_000, both);

  const tgenServers: ChildProcess[] = [];
  for (const dif of ['udp.lo', 'n.DIF']) tgenServers.push(await tgenServer(t, dif, sockA));

  for (const dif of ['udp.lo', 'n.DIF']) {
    for (const size of [0, 700, 1400]) {
      // The shim-udp DIF grants unreliable flows only; the normal DIF over it gives tgen's default reliable one.
      const r = cli(['tgen', 'client', '--dif', dif, '--ipc-socket', sockB, '--size', String(size), '--count', '100', ...(dif === 'udp.lo' ? ['--unreliable'] : [])]);
      t.equal(r.status, 0, `tgen client over ${dif}, ${size} B: ${r.out.trim()}`);
      const m = /sent (\d+) SDUs .*server got (\d+) SDUs, (\d+) bytes/.exec(r.out);
      t.ok(m, 'a result line');
      if (m) t.same([Number(m[2]), Number(m[3])], [100, 100 * size], `over ${dif}: 100 SDUs of ${size} B arrived`);
    }
  }

  // Bytes intact over both DIFs: a registered app on A echoes, a client on B checks.
  const ca = await IpcClient.connect(sockA);
  t.teardown(() => ca.close());
  const cb = await IpcClient.connect(sockB);
  t.teardown(() => cb.close());
  for (const dif of ['n.DIF', 'udp.lo']) {
    const reg = await ca.register(dif, 'check');
    const accepted: string[] = [];
    reg.on('request', (req) => {
      void req.accept().then((f) => {
        accepted.push(f.datapath);
        f.on('data', (sdu) => f.write(sdu));
      });
    });
    // The registration reaches B's directory by a flood a moment after A answered: retry the
    // 'unknown application' miss for a bounded while, as an application would.
    let flow: Awaited<ReturnType<typeof cb.allocate>> | undefined;
    for (const until = Date.now() + 5000; !flow; ) {
      try {
        flow = await cb.allocate(dif, 'check', { src: 'checker' });
      } catch (e) {
        if ((e as { code?: string }).code !== 'rejected' || Date.now() > until) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    t.equal(flow.datapath, 'ring', `${dif}: B's application gets a ring`);
    for (let n = 0; n <= 1400; n += 100) {
      const sdu = Uint8Array.from({ length: n }, (_, i) => (i * 31 + n) & 0xff);
      flow.write(sdu);
      const back = await Promise.race([flow.read(), new Promise<null>((r) => setTimeout(() => r(null), 3000))]);
      t.same(back && Buffer.from(back), Buffer.from(sdu), `${dif}: ${n} bytes back intact`);
    }
    t.same(accepted, ['socket'], `${dif}: A's application keeps the socket (config ipc.maxRingBytes: 0)`);
    if (dif === 'n.DIF') flow.deallocate();
    else {
      // `vmpi dif show` covers the shim-udp IPC process.
      const show = cli(['dif', 'show', 'udp.lo', '--ipc-socket', sockB]);
      t.equal(show.status, 0, 'vmpi dif show udp.lo');
      t.match(show.out, /shim-udp IPC process/);
      t.match(show.out, new RegExp(`bind 127\\.0\\.0\\.1:${pb}`));
      t.match(show.out, /Flows \(\d+\):[\s\S]*allocated/);
      // Peer killed: the flow over the shim-udp DIF ends with a cause within the documented time.
      const ended = new Promise<[string, number]>((r) => flow.once('deallocated', (reason) => r([reason, Date.now()])));
      await new Promise((r) => setTimeout(r, 3 * KEEPALIVE_MS));
      t.equal(flow.state, 'allocated', 'an idle flow stays up while the peer lives');
      const t0 = Date.now();
      for (const s of tgenServers) s.kill('SIGKILL');
      a.child.kill('SIGKILL');
      const [reason, at] = await Promise.race([ended, new Promise<[string, number]>((_, rej) => setTimeout(() => rej(new Error(`no deallocation; ${both()}`)), 10_000))]);
      t.match(reason, /keepalive timeout/, `reason: ${reason}`);
      t.ok(at - t0 <= KEEPALIVE_TIMEOUT_MS + KEEPALIVE_MS + 500, `ended ${at - t0} ms after the kill (bound ${KEEPALIVE_TIMEOUT_MS} + ${KEEPALIVE_MS} ms)`);
      break;
    }
  }
});
