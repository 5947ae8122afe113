/**
 * Two `vmpi serve` processes, each in a network namespace of its own, joined by a veth pair
 * (jumbo MTU 9000), configured only by their config files: each runs a shim-eth IPC process on
 * its end, on VLAN 100 (the `vlan` key on the parent interface: frames tagged by vmpi itself;
 * where the kernel has 802.1Q devices, a second run uses VLAN sub-interfaces `X.100` instead),
 * and a normal DIF over it (A the enroller, B a member).
 *   - `vmpi tgen` host to host over the shim DIF alone: SDUs of 0, 1000 and the max SDU, all
 *     arrive; an IPC client echo checks bytes intact for sizes 0..max; then over the normal DIF.
 *   - `vmpi dif show` dumps the shim-eth IPC process.
 *   - `ip link set down` on A's end: A's flow ends with cause port_down at once, B's with cause
 *     peer (keepalive timeout); after `up`, a new flow works.
 *   - A killed (SIGKILL): B's flow ends with cause peer within keepaliveTimeoutMs + keepaliveMs.
 * Frames only travel on the veth pair inside the namespaces this test creates and removes.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import t from 'tap';
import { IpcClient } from '../src/dif/ipc/client.js';
import type { ClientFlow } from '../src/dif/ipc/client-flow.js';
import { until } from './helpers/serve.js';
import { cli, tgenServer, twoServes } from './helpers/two-serves.js';
import { canNetns, ip, netns, uniqueName, veth } from './helpers/netns.js';

const KEEPALIVE_MS = 200;
const KEEPALIVE_TIMEOUT_MS = 1000;
const MTU = 9000;
const MAX_SDU = MTU - 7;

const bounded = <T>(p: Promise<T>, ms: number, what: string): Promise<T> => {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
};

function vlanDevicesWork(): boolean {
  const ns = uniqueName('vq');
  try {
    ip('netns', 'add', ns);
    ip('-n', ns, 'link', 'add', 'd0', 'type', 'dummy');
    ip('-n', ns, 'link', 'add', 'link', 'd0', 'name', 'd0.100', 'type', 'vlan', 'id', '100');
    return true;
  } catch {
    return false;
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

const skip = canNetns();
const modes: ['vlan-key' | 'vlan-interface', string | false][] = [
  ['vlan-key', skip],
  ['vlan-interface', skip || (vlanDevicesWork() ? false : 'this kernel has no 802.1Q VLAN devices (CONFIG_VLAN_8021Q)')],
];

for (const [mode, skipMode] of modes) {
  t.test(`two serve processes in two namespaces, shim-eth on VLAN 100 (${mode}), a normal DIF over it`, { skip: skipMode }, async (t) => {
    const nsA = netns(t, 'vmpiea');
    const nsB = netns(t, 'vmpieb');
    const ifA = uniqueName('ea');
    const ifB = uniqueName('eb');
    veth(nsA, ifA, nsB, ifB, MTU);
    let devA = ifA;
    let devB = ifB;
    const vlanKey = mode === 'vlan-key' ? { vlan: 100 } : {};
    if (mode === 'vlan-interface') {
      for (const [ns, dev] of [[nsA, ifA], [nsB, ifB]] as const) {
        ip('-n', ns, 'link', 'add', 'link', dev, 'name', `${dev}.100`, 'type', 'vlan', 'id', '100');
        ip('-n', ns, 'link', 'set', `${dev}.100`, 'up');
      }
      devA = `${ifA}.100`;
      devB = `${ifB}.100`;
    }
    const eth = { dif: 'eth.v100', keepaliveMs: KEEPALIVE_MS, keepaliveTimeoutMs: KEEPALIVE_TIMEOUT_MS, allocateTimeoutMs: 5000, ...vlanKey };
    const { a, b, sockA, sockB, both } = await twoServes(
      t,
      'shim-eth-serve',
      { shimEth: { ...eth, interface: devA }, normal: { dif: 'n.DIF', name: 'n.DIF.a' } },
      { shimEth: { ...eth, interface: devB }, normal: { dif: 'n.DIF', name: 'n.DIF.b', role: 'member', enroller: 'n.DIF.a' } },
      [{ netns: nsA }, { netns: nsB }],
    );
    await until('B enrolled in n.DIF', () => b.log().includes('normal DIF: enrolled'), 40_000, both);

    const tgenServers: ChildProcess[] = [];
    for (const dif of ['eth.v100', 'n.DIF']) {
      tgenServers.push(await tgenServer(t, dif, sockA));
    }
    for (const [dif, sizes] of [['eth.v100', [0, 1000, MAX_SDU]], ['n.DIF', [0, 1400]]] as const) {
      for (const size of sizes) {
        const r = cli(['tgen', 'client', '--dif', dif, '--ipc-socket', sockB, '--size', String(size), '--count', '100', ...(dif === 'eth.v100' ? ['--unreliable'] : [])]);
        t.equal(r.status, 0, `tgen client over ${dif}, ${size} B: ${r.out.trim()}`);
        const m = /sent (\d+) SDUs .*server got (\d+) SDUs, (\d+) bytes/.exec(r.out);
        t.ok(m, 'a result line');
        if (m) t.same([Number(m[2]), Number(m[3])], [100, 100 * size], `over ${dif}: 100 SDUs of ${size} B arrived`);
      }
    }
    for (const s of tgenServers) s.kill('SIGKILL');

    // Bytes intact over the shim DIF, sizes 0..max: a registered app on A echoes, a client on B checks.
    const ca = await IpcClient.connect(sockA);
    t.teardown(() => ca.close());
    const cb = await IpcClient.connect(sockB);
    t.teardown(() => cb.close());
    const aFlows: ClientFlow[] = [];
    const reg = await ca.register('eth.v100', 'check');
    reg.on('request', (req) => {
      req.accept().then(
        (f) => {
          aFlows.push(f);
          f.on('data', (sdu) => f.write(sdu));
        },
        // Under load a request can settle (expire) before the accept reaches it: the allocation
        // below then fails on its own, with its own message, instead of an unhandled rejection.
        () => undefined,
      );
    });
    const echo = async (flow: ClientFlow, n: number): Promise<boolean> => {
      const sdu = Uint8Array.from({ length: n }, (_, i) => (i * 31 + n) & 0xff);
      flow.write(sdu);
      const back = await Promise.race([flow.read(), new Promise<null>((r) => setTimeout(() => r(null), 3000))]);
      return back !== null && Buffer.from(back).equals(Buffer.from(sdu));
    };
    let flow = await cb.allocate('eth.v100', 'check', { src: 'checker' });
    t.equal(flow.qos.maxSdu, MAX_SDU, 'max SDU from the jumbo MTU');
    const bad: number[] = [];
    for (const n of [0, 1, 59, 60, 1500, 4096, MAX_SDU - 1, MAX_SDU]) if (!(await echo(flow, n))) bad.push(n);
    t.same(bad, [], 'every size 0..max back intact');

    const show = cli(['dif', 'show', 'eth.v100', '--ipc-socket', sockB]);
    t.equal(show.status, 0, 'vmpi dif show eth.v100');
    t.match(show.out, /shim-eth IPC process/);
    t.match(show.out, new RegExp(`interface ${devB.replace('.', '\\.')}${mode === 'vlan-key' ? ' VLAN 100' : ''}, MAC [0-9a-f:]{17}, link up, MTU ${MTU} \\(max SDU ${MAX_SDU}\\)`));
    t.match(show.out, /Resolved names \(\d+\):[\s\S]*check/);
    t.match(show.out, /Flows \(\d+\):[\s\S]*allocated/);

    // A's end goes down: A's flow ends at once (port_down), B's by keepalive (peer).
    const aEnded = new Promise<[string, string]>((r) => aFlows[0]!.once('deallocated', (reason, cause) => r([reason, cause])));
    const bEnded = new Promise<[string, string]>((r) => flow.once('deallocated', (reason, cause) => r([reason, cause])));
    const t0 = Date.now();
    ip('-n', nsA, 'link', 'set', ifA, 'down');
    const [ar, ac] = await bounded(aEnded, 5000, `A's flow end; ${both()}`);
    t.equal(ac, 'port_down', `A: ${ar}`);
    const [br, bc] = await bounded(bEnded, 10_000, `B's flow end; ${both()}`);
    t.equal(bc, 'peer', `B: ${br}`);
    t.ok(Date.now() - t0 <= KEEPALIVE_TIMEOUT_MS + KEEPALIVE_MS + 1000, `B's flow ended ${Date.now() - t0} ms after the link went down`);
    await t.rejects(cb.allocate('eth.v100', 'check', { src: 'checker', timeoutMs: 1500 }), Error, 'no flow while the link is down');
    ip('-n', nsA, 'link', 'set', ifA, 'up');
    if (mode === 'vlan-interface') ip('-n', nsA, 'link', 'set', devA, 'up');
    // The keepalive tick at A notices the link is up again; B's cache still knows A's MAC.
    let again: ClientFlow | undefined;
    const end = Date.now() + 15_000;
    while (!again && Date.now() < end) {
      try {
        again = await cb.allocate('eth.v100', 'check', { src: 'checker', timeoutMs: 2000 });
      } catch {
        await new Promise((r) => setTimeout(r, 300));
      }
    }
    t.ok(again, `a new flow once the link is up${again ? '' : `; ${both()}`}`);
    flow = again!;
    t.ok(await echo(flow, 1000), 'and it carries SDUs');

    // A killed: B's flow ends with a cause within the documented time.
    const ended = new Promise<[string, number]>((r) => flow.once('deallocated', (reason) => r([reason, Date.now()])));
    const t1 = Date.now();
    a.child.kill('SIGKILL');
    const [reason, at] = await bounded(ended, 10_000, `deallocation after the kill; ${both()}`);
    t.match(reason, /keepalive timeout/, `reason: ${reason}`);
    t.ok(at - t1 <= KEEPALIVE_TIMEOUT_MS + KEEPALIVE_MS + 500, `ended ${at - t1} ms after the kill (bound ${KEEPALIVE_TIMEOUT_MS} + ${KEEPALIVE_MS} ms)`);
  });
}
