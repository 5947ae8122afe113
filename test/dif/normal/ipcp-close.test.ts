/**
 * A closed normal IPC process leaves nothing behind (issue #12): every timer it set on its Clock
 * (routing's refresh/age/keepalive, enrollment sessions and retries, the directory's refresh,
 * the flow allocator's requests, EFCP and linger timers, the RMT's watchdog, the address pool's
 * holds) is cleared by close(), and no handle keeps the process alive afterwards. A counting
 * Clock over the real one sees each timer set, fired or cleared.
 */
import t from 'tap';
import type { Clock, TimerHandle } from '../../../src/dif/normal/clock.js';
import { realClock } from '../../../src/dif/normal/clock.js';
import { NormalIpcp } from '../../../src/dif/normal/ipcp.js';
import { ShimHvIpcp } from '../../../src/dif/shim-hv/ipcp.js';
import { createPortPair } from '../port-pair.js';
import { sleep, until } from '../helpers.js';
import { acceptAll, knows, routes, within } from './ipcp-harness.js';

/** The real clock, counting the timers still pending (set, neither fired nor cleared) and where each was set. */
class CountingClock implements Clock {
  private readonly live = new Map<number, string>();
  now(): number {
    return realClock.now();
  }
  setTimer(ms: number, fn: () => void): TimerHandle {
    let h: TimerHandle | undefined = undefined;
    const where = (new Error().stack ?? '').split('\n').slice(2, 4).map((l) => l.trim()).join(' < ');
    h = realClock.setTimer(ms, () => {
      this.live.delete(h!.id);
      fn();
    });
    this.live.set(h.id, where);
    return h;
  }
  clearTimer(h: TimerHandle | undefined): void {
    if (h) this.live.delete(h.id);
    realClock.clearTimer(h);
  }
  get pending(): string[] {
    return [...this.live.values()];
  }
}

t.test('close() clears every timer of a normal IPC process that enrolled, routed, allocated and lingered', async (t) => {
  const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const clock = new CountingClock();
  const pair1 = createPortPair({ vmpiId: 1 });
  const pair2 = createPortPair({ vmpiId: 2 });
  const h1 = new ShimHvIpcp({ port: pair1.host, role: 'host' });
  const h2 = new ShimHvIpcp({ port: pair2.host, role: 'host' });
  const g1 = new ShimHvIpcp({ port: pair1.guest, role: 'guest' });
  const g2 = new ShimHvIpcp({ port: pair2.guest, role: 'guest' });
  const host = new NormalIpcp({ difName: 'n.DIF', name: 'host.n', role: 'enroller', lower: [h1, h2], clock, keepaliveMs: 200 });
  const vm1 = new NormalIpcp({ difName: 'n.DIF', name: 'vm1.n', role: 'member', enroll: { lower: g1, enrollerName: 'host.n' }, retryMs: 50, clock, keepaliveMs: 200 });
  const vm2 = new NormalIpcp({ difName: 'n.DIF', name: 'vm2.n', role: 'member', enroll: { lower: g2, enrollerName: 'host.n' }, retryMs: 50, clock, keepaliveMs: 200 });
  const all = [vm1, vm2, host];
  const shims = [h1, h2, g1, g2];
  t.teardown(() => {
    for (const n of all) n.close();
    for (const s of shims) s.close();
  });
  await until(() => vm1.isEnrolled && vm2.isEnrolled, 'both VMs enrolled', 5000);
  await until(() => routes(vm1).includes(vm2.address), 'a route VM1 → VM2', 5000);
  const sink = acceptAll(vm2, 'sink');
  await until(() => knows(vm1, 'sink'), 'VM1 knows sink', 5000);
  const rel = await within(vm1.allocateFlow('c', 'sink', { reliable: true }), 5000, 'a reliable flow');
  const fc = await within(vm1.allocateFlow('d', 'sink', { inOrder: true }), 5000, 'a flow-controlled flow');
  await sink.next();
  await sink.next();
  rel.write(new Uint8Array(100));
  fc.write(new Uint8Array(100));
  rel.deallocate('done'); // possibly lingering: it holds an SDU not acknowledged yet
  await sleep(20);
  t.ok(clock.pending.length > 0, `timers run while the DIF is up (${clock.pending.length})`);

  for (const n of all) n.close();
  for (const s of shims) s.close();
  await sleep(10);
  t.same(clock.pending, [], 'no timer of any normal IPC process is left after close()');
  const after = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  t.ok(after <= before + 1, `no timer keeps the process alive (${before} before, ${after} after)`);
});
