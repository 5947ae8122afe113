/**
 * The shim-eth IPC process in the metrics (src/ops/metrics.ts): its info series, frames and bytes,
 * drops by reason and resolutions, through the counters every IPC process reports (on the fake
 * segment of test/helpers/fake-eth.ts; the packet socket is in test/shim-eth-serve.test.ts).
 * A late second answer to a resent resolution request (retryMs: under load the first answer
 * comes after the resend) is not counted as an unsolicited drop.
 */
import t from 'tap';
import { HostMetrics } from '../src/ops/metrics.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { ShimEthIpcp } from '../src/dif/shim-eth/ipcp.js';
import { buildFrame, encodeArp } from '../src/dif/shim-eth/wire.js';
import { FakeHub } from './helpers/fake-eth.js';
import { sample } from './helpers/exposition.js';

t.test('shim-eth metrics: frames, bytes, drops by reason, resolutions', async (t) => {
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const hub = new FakeHub();
  const la = hub.link();
  const lb = hub.link();
  const a = ShimEthIpcp.open({ difName: 'eth.m', interface: 'ethA', link: la, allocateTimeoutMs: 200, retryMs: 50 });
  const b = ShimEthIpcp.open({ difName: 'eth.m', interface: 'ethB', link: lb });
  t.teardown(() => {
    a.close();
    b.close();
  });
  const metrics = new HostMetrics(host, { processMetrics: false });
  metrics.addIpcp(a);
  b.register('srv', (req) => void req.accept());
  const f = await a.allocateFlow('cli', 'srv');
  f.write(new Uint8Array(100));
  await t.rejects(a.allocateFlow('cli', 'nowhere'), { code: 'timeout' });
  la.deliver(buildFrame(la.mac, lb.mac, undefined, new Uint8Array([0x55])));
  // What the hub brings when the first answer to 'srv' came after the request was resent (50 ms):
  // B's answer to the second request, after the first resolved the name.
  la.deliver(buildFrame(la.mac, lb.mac, undefined, encodeArp({ op: 'reply', senderMac: lb.mac, senderName: 'srv', targetMac: la.mac, targetName: 'cli' })));
  t.equal(a.stats.arpRepliesDuplicate, 1, 'a late answer to our own resent request: a duplicate');
  const m = await metrics.metrics();
  t.equal(sample(m, 'vmpi_dif_ipcp_info', { dif: 'eth.m', type: 'shim-eth', name: 'eth.m.ethA' }), 1);
  t.equal(sample(m, 'vmpi_dif_datagrams_total', { dif: 'eth.m', direction: 'tx' }), a.stats.txFrames);
  t.ok(a.stats.txFrames >= 4, 'resolution requests, the allocation request, data');
  t.equal(sample(m, 'vmpi_dif_datagram_bytes_total', { dif: 'eth.m', direction: 'rx' }), a.stats.rxBytes);
  t.equal(sample(m, 'vmpi_dif_datagram_drops_total', { dif: 'eth.m', reason: 'malformed' }), 1);
  t.equal(sample(m, 'vmpi_dif_datagram_drops_total', { dif: 'eth.m', reason: 'unsolicited' }), 0);
  t.equal(sample(m, 'vmpi_dif_resolutions_total', { dif: 'eth.m', outcome: 'resolved' }), 1);
  t.equal(sample(m, 'vmpi_dif_resolutions_total', { dif: 'eth.m', outcome: 'unresolved' }), 1);
  t.equal(sample(m, 'vmpi_dif_sdus_total', { dif: 'eth.m', direction: 'tx' }), 1);
});

t.test('shim-eth: an answer for a cached name from another MAC, or not to us, is still unsolicited; the cache keeps its entry', async (t) => {
  const hub = new FakeHub();
  const la = hub.link();
  const lb = hub.link();
  const a = ShimEthIpcp.open({ difName: 'eth.d', interface: 'ethA', link: la });
  const b = ShimEthIpcp.open({ difName: 'eth.d', interface: 'ethB', link: lb });
  t.teardown(() => {
    a.close();
    b.close();
  });
  b.register('srv', (req) => void req.accept());
  await a.allocateFlow('cli', 'srv');
  const other = new Uint8Array([0x02, 0, 0, 0, 0, 0x99]);
  const reply = (senderMac: Uint8Array, targetMac: Uint8Array): Uint8Array => buildFrame(la.mac, senderMac, undefined, encodeArp({ op: 'reply', senderMac, senderName: 'srv', targetMac, targetName: 'cli' }));
  la.deliver(reply(other, la.mac));
  la.deliver(reply(lb.mac, other));
  t.equal(a.stats.drops.unsolicited, 2, 'another MAC for the name, or an answer to someone else');
  t.equal(a.stats.arpRepliesDuplicate, 0);
  la.deliver(reply(lb.mac, la.mac));
  t.equal(a.stats.arpRepliesDuplicate, 1, 'the MAC the cache holds, to us: a duplicate');
  t.equal(a.stats.drops.unsolicited, 2);
  t.same(
    (a.inspect().cache as { name: string; mac: string }[]).map((c) => c.mac),
    ['02:00:00:00:00:02'],
    "the cache holds B's MAC only",
  );
});
