/**
 * close() and detach() of the datagram shims (src/dif/shim-datagram/ipcp.ts), the same in
 * shim-udp (real UDP sockets on 127.0.0.1) and shim-eth (the fake segment,
 * test/helpers/fake-eth.ts): close() ends the allocated flow at the peer at once (DEALLOC), and a
 * request that waits for its application is refused toward the peer at once (before, shim-eth
 * only cancelled it and the peer waited for its allocation timeout); detach() says nothing to the
 * peer (it finds out by keepalive); both end local flows with cause 'closed', drop registrations,
 * and are idempotent.
 */
import t, { type Test } from 'tap';
import type { Flow, IpcProcess } from '../../src/dif/api.js';
import { ShimUdpIpcp } from '../../src/dif/shim-udp/ipcp.js';
import { ShimEthIpcp } from '../../src/dif/shim-eth/ipcp.js';
import { FakeHub } from '../helpers/fake-eth.js';

type Shim = IpcProcess & { close(reason?: string): void; detach(reason?: string): void; isRegistered(app: string): boolean };

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms).unref())]);
}

/** Two IPC processes of one kind: `srv` registered at A; B reaches it. */
async function pair(t: Test, kind: 'shim-udp' | 'shim-eth'): Promise<{ a: Shim; b: Shim }> {
  const common = { difName: 'dg.test', allocateTimeoutMs: 10_000, keepaliveMs: 100, keepaliveTimeoutMs: 5000 };
  if (kind === 'shim-udp') {
    const a = await ShimUdpIpcp.open({ ...common, bind: '127.0.0.1:0' });
    const b = await ShimUdpIpcp.open({ ...common, bind: '127.0.0.1:0' });
    b.addPeer('srv', a.localAddress);
    a.allowAddress(b.localAddress);
    t.teardown(() => (a.close(), b.close()));
    return { a, b };
  }
  const hub = new FakeHub();
  const la = hub.link();
  const lb = hub.link();
  const a = ShimEthIpcp.open({ ...common, interface: la.ifname, link: la, retryMs: 50 });
  const b = ShimEthIpcp.open({ ...common, interface: lb.ifname, link: lb, retryMs: 50 });
  t.teardown(() => (a.close(), b.close()));
  return { a, b };
}

for (const kind of ['shim-udp', 'shim-eth'] as const) {
  t.test(`${kind}: close() tells the peer, at once, about flows and waiting requests`, async (t) => {
    const { a, b } = await pair(t, kind);
    const served: Flow[] = [];
    let waiting = false;
    a.register('srv', (r) => {
      if (!waiting) served.push(r.accept());
      // the second request is left waiting for its application
    });
    const f = await b.allocateFlow('cli', 'srv');
    waiting = true;
    const t0 = Date.now();
    const second = b.allocateFlow('cli2', 'srv');
    second.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    const ended = new Promise<string>((r) => f.once('deallocated', (reason: string) => r(reason)));
    const localEnd = new Promise<string>((r) => served[0]!.once('deallocated', (_reason: string, cause: string) => r(cause)));
    a.close('going away');
    t.match(await within(ended, 2000, 'the flow ends at the peer'), /deallocated by the peer: going away/);
    await t.rejects(within(second, 2000, 'the waiting request is refused'), { code: 'rejected', message: /going away/ }, 'the waiting request refused at once');
    t.ok(Date.now() - t0 < 5000, 'well before the allocation timeout');
    t.equal(await localEnd, 'closed', "A's flow ends with cause closed");
    t.notOk(a.isRegistered('srv'), 'registrations dropped');
    a.close();
    t.pass('idempotent');
  });

  t.test(`${kind}: detach() says nothing to the peer`, async (t) => {
    const { a, b } = await pair(t, kind);
    const served: Flow[] = [];
    a.register('srv', (r) => void served.push(r.accept()));
    const f = await b.allocateFlow('cli', 'srv');
    const localEnd = new Promise<string>((r) => served[0]!.once('deallocated', (_reason: string, cause: string) => r(cause)));
    a.detach('crash');
    t.equal(await localEnd, 'closed', 'the local flow ends with cause closed');
    t.notOk(a.isRegistered('srv'), 'registrations dropped');
    await new Promise((r) => setTimeout(r, 300));
    t.equal(f.state, 'allocated', 'the peer heard nothing (it finds out by keepalive)');
    a.detach();
  });
}
