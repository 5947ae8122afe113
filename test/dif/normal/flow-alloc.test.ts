/**
 * flow-alloc.test.ts — the normal DIF's flow allocator messages (src/dif/normal/flow-alloc.ts)
 * between members joined by a simulated management path (real CDAP codec, ManualClock, seeded
 * loss): allocation, every negative answer with its reason, timeouts, idempotent answers under
 * loss, deletion from either end, no resurrection by a late duplicate, and loss of a member.
 */
import t from 'tap';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { CepAllocator } from '../../../src/dif/normal/cep-alloc.js';
import { decodeCdap, encodeCdap, type CdapMessage } from '../../../src/dif/normal/cdap.js';
import { FlowAllocator, FlowAllocError, type FlowDecision, type FlowInfo } from '../../../src/dif/normal/flow-alloc.js';
import type { FlowRequest } from '../../../src/dif/normal/cdap-objects.js';
import { prng, pump } from './mgmt-harness.js';

interface Node {
  fa: FlowAllocator;
  ceps: CepAllocator;
  deleted: string[];
  decide: (r: FlowRequest) => FlowDecision | Promise<FlowDecision>;
}

function dif(opts: { loss?: number; seed?: number; latencyMs?: number; timeoutMs?: number; retries?: number } = {}) {
  const clock = new ManualClock();
  const rnd = prng(opts.seed ?? 7);
  const nodes = new Map<number, Node>();
  const dirmap = new Map<string, number>();
  const wire: { from: number; to: number; msg: CdapMessage }[] = [];
  let nextPort = 100;
  const add = (addr: number) => {
    const node: Node = { deleted: [], decide: () => ({ accept: true, port: nextPort++ }) } as unknown as Node;
    node.ceps = new CepAllocator({ clock, quarantineMs: 5000 });
    node.fa = new FlowAllocator({
      clock,
      localAddress: () => addr,
      lookup: (app) => dirmap.get(app.processName),
      send: (to, msg) => {
        wire.push({ from: addr, to, msg });
        const bytes = encodeCdap(msg);
        if (rnd() < (opts.loss ?? 0)) return;
        clock.setTimer(opts.latencyMs ?? 1, () => nodes.get(to)?.fa.receive(addr, decodeCdap(bytes)));
      },
      onRequest: (r) => node.decide(r),
      onDeleted: (f, why) => node.deleted.push(`${f.name}: ${why}`),
      ceps: node.ceps,
      timeoutMs: opts.timeoutMs ?? 100,
      retries: opts.retries ?? 3,
      acceptTimeoutMs: 2000,
      allocateTimeoutMs: 3000,
    });
    nodes.set(addr, node);
    return node;
  };
  return { clock, nodes, dirmap, wire, add };
}

const app = (p: string) => ({ processName: p });
const alloc = (n: Node, dst: string, srcPort = 1) => n.fa.allocate({ srcApp: app('client'), dstApp: app(dst), srcPort, qosCube: 2 });

t.test('allocation across the DIF, then deletion from either end', async (t) => {
  const { clock, add, dirmap } = dif();
  const a = add(1);
  const b = add(2);
  dirmap.set('server', 2);
  const r = await pump(clock, alloc(a, 'server', 7));
  t.equal(r.ok, true);
  if (r.ok !== true) return;
  const fa = r.value;
  const [fb] = b.fa.flows() as [FlowInfo];
  t.match(fa, { name: `/fa/flows/1-${fa.localCep}`, initiator: true, localAddr: 1, remoteAddr: 2, localPort: 7, remotePort: 100, remoteCep: fb.localCep, qosCube: 2 });
  t.match(fb, { name: fa.name, initiator: false, localAddr: 2, remoteAddr: 1, localPort: 100, remotePort: 7, remoteCep: fa.localCep });
  t.ok(a.fa.deallocate(fa.name, 'app closed'));
  clock.advance(10);
  t.same(b.deleted, [`${fa.name}: app closed`]);
  t.same(b.fa.flows(), []);
  t.ok(a.ceps.isQuarantined(fa.localCep) && b.ceps.isQuarantined(fb.localCep), 'both CEP-ids rest in quarantine');
  t.equal(a.fa.snapshot().pendingOut, 0, 'delete acknowledged');
  // and from the responder's end
  const r2 = await pump(clock, alloc(a, 'server'));
  if (r2.ok !== true) return t.fail('second allocation');
  t.ok(b.fa.deallocate(r2.value.name));
  clock.advance(10);
  t.same(a.deleted, [`${r2.value.name}: deallocated`]);
  t.equal(a.fa.flows().length, 0);
});

t.test('negative answers carry a reason', async (t) => {
  const { clock, add, dirmap } = dif();
  const a = add(1);
  const b = add(2);
  dirmap.set('server', 2);
  dirmap.set('ghost', 9);
  const miss = await pump(clock, alloc(a, 'nobody'));
  t.match((miss as { error: FlowAllocError }).error, { code: 'ERR_FA_NO_SUCH_APP', message: /nobody is not registered/ });
  t.equal(miss.at, 0, 'a directory miss answers at once');
  b.decide = () => ({ accept: false, reason: 'server is full' });
  const no = await pump(clock, alloc(a, 'server'));
  t.match((no as { error: FlowAllocError }).error, { code: 'ERR_FA_REJECTED', message: /server is full/ });
  b.decide = () => new Promise(() => {});
  const slow = await pump(clock, alloc(a, 'server'));
  t.match((slow as { error: FlowAllocError }).error, { code: 'ERR_FA_REJECTED', message: /did not answer within 2000 ms/ });
  b.decide = () => {
    throw new Error('boom');
  };
  const crash = await pump(clock, alloc(a, 'server'));
  t.match((crash as { error: FlowAllocError }).error, { code: 'ERR_FA_REJECTED', message: /the application failed: boom/ });
  const gone = await pump(clock, alloc(a, 'ghost'));
  t.match((gone as { error: FlowAllocError }).error, { code: 'ERR_FA_TIMEOUT', message: /no answer from member 9/ });
  t.equal(gone.at, 3000, 'retransmitted every 100 ms until allocateTimeoutMs');
  t.equal(a.ceps.used, 0, 'no CEP-id held by a failed allocation');
  t.equal(b.ceps.used, 0);
  const tiny = new FlowAllocator({ clock, localAddress: () => 0, lookup: () => 2, send: () => {}, onRequest: () => ({ accept: true, port: 1 }), ceps: new CepAllocator({ clock }) });
  await t.rejects(tiny.allocate({ srcApp: app('c'), dstApp: app('s'), srcPort: 1, qosCube: 0 }), { code: 'ERR_FA_NO_ADDRESS' });
});

t.test('under seeded loss: one flow per request, duplicates answered alike, no resurrection', async (t) => {
  for (let seed = 1; seed <= 20; seed++) {
    const { clock, add, dirmap, wire } = dif({ loss: 0.3, seed, latencyMs: 3, timeoutMs: 5, retries: 20 });
    const a = add(1);
    const b = add(2);
    dirmap.set('server', 2);
    const flows: FlowInfo[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await pump(clock, alloc(a, 'server'), 10_000, 1);
      if (r.ok !== true) {
        t.fail(`seed ${seed}: ${String((r as { error?: unknown }).error)}`);
        continue;
      }
      flows.push(r.value);
    }
    clock.advance(200);
    t.equal(b.fa.flows().length, 5, `seed ${seed}: exactly one flow per request at the responder`);
    for (const f of flows) a.fa.deallocate(f.name);
    clock.advance(500);
    t.equal(b.fa.flows().length, 0, `seed ${seed}: all deleted`);
    // A late copy of an old M_CREATE (delivered after the delete) must not make a flow again.
    const oldCreate = wire.find((w) => w.msg.op === 'M_CREATE')!;
    b.fa.receive(1, decodeCdap(encodeCdap(oldCreate.msg)));
    clock.advance(20);
    t.equal(b.fa.flows().length, 0, `seed ${seed}: late duplicate refused`);
    if (seed === 1) t.ok(b.fa.stats.duplicates > 0, `duplicates answered: ${b.fa.stats.duplicates}`);
  }
});

t.test('a lost member ends its flows and pending requests with a cause', async (t) => {
  const { clock, add, dirmap } = dif();
  const a = add(1);
  const b = add(2);
  add(3);
  dirmap.set('server', 2);
  dirmap.set('other', 3);
  const r1 = await pump(clock, alloc(a, 'server'));
  const r2 = await pump(clock, alloc(a, 'other'));
  t.ok(r1.ok === true && r2.ok === true);
  b.decide = () => new Promise(() => {});
  const pending = alloc(a, 'server');
  clock.advance(5);
  a.fa.memberLost(2, 'route to member 2 withdrawn');
  const r3 = await pump(clock, pending);
  t.match((r3 as { error: FlowAllocError }).error, { code: 'ERR_FA_UNREACHABLE', message: /route to member 2 withdrawn/ });
  t.equal(r3.at, 0, 'failed at once, not after the timeout');
  t.equal(a.deleted.length, 1);
  t.match(a.deleted[0], /route to member 2 withdrawn/);
  t.equal(a.fa.flows().length, 1, 'the flow to member 3 carries on');
});

t.test('bad flow messages are refused or ignored, never thrown', async (t) => {
  const { clock, add, wire } = dif();
  const b = add(2);
  add(1);
  b.fa.receive(1, { op: 'M_CREATE', invokeId: 1, objClass: 'flow', objName: '/fa/flows/1-1', value: new Uint8Array([0xff, 0x01]) });
  b.fa.receive(1, { op: 'M_CREATE', invokeId: 2, objClass: 'flow', objName: '/fa/flows/1-1' });
  b.fa.receive(1, { op: 'M_CREATE_R', invokeId: 99, objClass: 'flow', objName: '/x', result: 0, reason: '' });
  b.fa.receive(1, { op: 'M_WRITE', invokeId: 3, objClass: 'rib', objName: '/x' });
  b.fa.receive(1, { op: 'M_DELETE', invokeId: 4, objClass: 'flow', objName: '/fa/flows/1-77' });
  clock.advance(5);
  t.same(
    wire.map((w) => `${w.msg.op} ${'result' in w.msg ? w.msg.result : ''}`),
    ['M_CREATE_R -1', 'M_CREATE_R -1', 'M_DELETE_R 0'],
  );
  t.equal(b.fa.stats.ignored, 2);
});

t.test('initial sequence numbers and max SDU travel in the messages; onEstablished runs before the answer', async (t) => {
  const { clock, add, dirmap, wire } = dif();
  const a = add(1);
  const b = add(2);
  dirmap.set('server', 2);
  b.decide = () => ({ accept: true, port: 5, initSeq: 0xfffffff0 });
  const r = await pump(clock, a.fa.allocate({ srcApp: app('client'), dstApp: app('server'), srcPort: 1, qosCube: 1, initSeq: 123456, maxSdu: 1400 }));
  if (r.ok !== true) return t.fail('allocation failed');
  t.match(r.value, { localInitSeq: 123456, remoteInitSeq: 0xfffffff0, maxSdu: 1400 });
  const [fb] = b.fa.flows() as [FlowInfo];
  t.match(fb, { localInitSeq: 0xfffffff0, remoteInitSeq: 123456, maxSdu: 1400 });
  // The requester's hook sees the flow before its promise settles (member 3 with a hook asks member 2).
  const order: string[] = [];
  const c = dif();
  c.add(2);
  const hooked = new FlowAllocator({
    clock: c.clock,
    localAddress: () => 3,
    lookup: () => 2,
    send: (to, msg) => void c.clock.setTimer(1, () => c.nodes.get(to)?.fa.receive(3, decodeCdap(encodeCdap(msg)))),
    onRequest: () => ({ accept: false, reason: 'x' }),
    onEstablished: () => order.push('established'),
    ceps: new CepAllocator({ clock: c.clock }),
  });
  c.nodes.set(3, { fa: hooked } as unknown as Node);
  const r2 = await pump(c.clock, hooked.allocate({ srcApp: app('client'), dstApp: app('server'), srcPort: 1, qosCube: 1 }).then(() => order.push('resolved')));
  t.equal(r2.ok, true);
  t.same(order, ['established', 'resolved'], 'the requester hook runs before the promise settles');
  void wire;
});
