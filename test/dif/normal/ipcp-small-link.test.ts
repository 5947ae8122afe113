/**
 * ipcp-small-link.test.ts — a normal DIF whose state is larger than one N-1 SDU, over small N-1
 * links (issue #12): the enrollment chunks, the directory floods and the routing updates are each
 * cut to fit the link's max SDU (less the PCI and CDAP envelope). On main each was cut to a fixed
 * budget (8192-byte chunks and directory updates, 64 or 256 LFDB entries), larger than a 1472-byte
 * shim-udp datagram, so the RMT dropped them (too_big): a member behind such a link never enrolled,
 * lost the others' names at their refresh, or never learnt the DIF's routes.
 */
import t, { type Test } from 'tap';
import { NormalIpcp, type NormalIpcpOptions } from '../../../src/dif/normal/ipcp.js';
import { ShimHvIpcp } from '../../../src/dif/shim-hv/ipcp.js';
import { createPortPair } from '../port-pair.js';
import { until } from '../helpers.js';
import { acceptAll, knows, routes, within } from './ipcp-harness.js';

const DIF = 'n.DIF';
const UDP = 1472;

interface Dif {
  host: NormalIpcp;
  vms: NormalIpcp[];
  edge: NormalIpcp;
}

/** host (enroller) with `vms` members over big links, and `edge` over a link of `small` bytes. */
async function build(t: Test, o: { vms: number; small: number; hostApps?: number; member?: Partial<NormalIpcpOptions>; host?: Partial<NormalIpcpOptions> }): Promise<Dif> {
  const shims: ShimHvIpcp[] = [];
  const ipcps: NormalIpcp[] = [];
  t.teardown(() => {
    for (const n of ipcps) n.close();
    for (const s of shims) s.close();
  });
  const pair = (id: number, maxSdu?: number) => {
    const p = createPortPair({ vmpiId: id, ...(maxSdu !== undefined ? { maxSdu } : {}) });
    const h = new ShimHvIpcp({ port: p.host, role: 'host' });
    const g = new ShimHvIpcp({ port: p.guest, role: 'guest' });
    shims.push(h, g);
    return { h, g };
  };
  const big = Array.from({ length: o.vms }, (_, i) => pair(100 + i));
  const small = pair(99, o.small);
  const host = new NormalIpcp({ difName: DIF, name: 'host.n', role: 'enroller', lower: [...big.map((p) => p.h), small.h], ...o.host });
  ipcps.push(host);
  for (let i = 0; i < (o.hostApps ?? 0); i++) host.register(`host-application-${String(i).padStart(3, '0')}`, (r) => r.reject('test'));
  const vms = big.map((p, i) => new NormalIpcp({ difName: DIF, name: `vm${i}.n`, role: 'member', enroll: { lower: p.g, enrollerName: 'host.n' }, retryMs: 50, ...o.member }));
  ipcps.push(...vms);
  await until(() => vms.every((v) => v.isEnrolled), 'the VMs enrolled', 10_000);
  const edge = new NormalIpcp({ difName: DIF, name: 'edge.n', role: 'member', enroll: { lower: small.g, enrollerName: 'host.n' }, retryMs: 50, ...o.member });
  ipcps.push(edge);
  return { host, vms, edge };
}

t.test('enrollment over a 1472-byte link, the DIF\'s directory larger than one SDU', async (t) => {
  const { host, edge } = await build(t, { vms: 1, small: UDP, hostApps: 150 });
  await until(() => edge.isEnrolled, 'the member behind the small link enrolled', 8000);
  await until(() => knows(edge, 'host-application-149'), 'it knows the directory', 3000);
  let n = 0;
  for (let i = 0; i < 150; i++) if (knows(edge, `host-application-${String(i).padStart(3, '0')}`)) n++;
  t.equal(n, 150, 'all 150 names, from chunks that each crossed the link');
  t.ok(routes(edge).includes(host.address), 'and a route to the host');
});

t.test("a member's directory refresh over a 1472-byte link: the other side keeps its names", async (t) => {
  const dir = { directory: { refreshMs: 200, maxAgeMs: 1000 } };
  const { host, edge } = await build(t, { vms: 1, small: UDP, member: dir, host: dir });
  await until(() => edge.isEnrolled, 'enrolled', 8000);
  for (let i = 0; i < 150; i++) edge.register(`edge-application-${String(i).padStart(3, '0')}`, (r) => r.reject('test'));
  await until(() => knows(host, 'edge-application-149'), 'the host learns the names (one flood each)', 3000);
  // Every refresh floods all 150 at once; names not refreshed for 1 s are forgotten.
  await new Promise((r) => setTimeout(r, 2500));
  let n = 0;
  for (let i = 0; i < 150; i++) if (knows(host, `edge-application-${String(i).padStart(3, '0')}`)) n++;
  t.equal(n, 150, 'the host still knows all 150 names after several refreshes (each update fits the link)');
});

t.test('routing over a 1000-byte link into a 30-member DIF (60 LFDB entries: 1144 bytes of kind 3)', async (t) => {
  const { vms, edge } = await build(t, { vms: 30, small: 1000 });
  await until(() => edge.isEnrolled, 'enrolled', 8000);
  await until(() => vms.every((v) => routes(edge).includes(v.address)), 'the member behind the small link routes to every member', 5000);
  await until(() => vms.every((v) => routes(v).includes(edge.address)), 'and every member to it', 5000);
  const sink = acceptAll(vms[29]!, 'sink');
  await until(() => knows(edge, 'sink'), 'edge knows sink', 3000);
  const f = await within(edge.allocateFlow('client', 'sink', { inOrder: true }), 5000, 'a flow across the DIF');
  const g = await sink.next();
  const sdu = new Uint8Array(f.qos.maxSdu).fill(7);
  await f.send(sdu);
  t.same(await within(g.read(), 5000, 'the SDU'), sdu, `an SDU of the path's max SDU (${f.qos.maxSdu}) arrives`);
});
