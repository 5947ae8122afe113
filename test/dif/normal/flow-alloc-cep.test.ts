/**
 * flow-alloc-cep.test.ts — CEP-id quarantine (src/dif/normal/cep-alloc.ts): a released id is not
 * handed out again before `quarantineMs`, exhaustion is a typed error rather than a reuse, a
 * fast-check model check of that rule, and IRATI #491's rapid create/teardown through the flow
 * allocator at both ends.
 */
import t from 'tap';
import fc from 'fast-check';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { CepAllocator, CepError } from '../../../src/dif/normal/cep-alloc.js';
import { decodeCdap, encodeCdap } from '../../../src/dif/normal/cdap.js';
import { FlowAllocator, type FlowInfo } from '../../../src/dif/normal/flow-alloc.js';
import { pump } from './mgmt-harness.js';

const SEED = Number(process.env.FC_SEED ?? 991);

t.test('a released CEP-id rests for quarantineMs; exhaustion is an error, not a reuse', async (t) => {
  const clock = new ManualClock();
  const c = new CepAllocator({ clock, quarantineMs: 1000, first: 1, last: 3 });
  t.same([c.allocate(), c.allocate()], [1, 2]);
  c.release(1);
  t.equal(c.allocate(), 3);
  t.throws(() => c.allocate(), CepError, 'only 1 is free, and it is in quarantine');
  t.match(c.snapshot(), { inUse: [2, 3], quarantine: [{ id: 1, until: 1000 }] });
  clock.advance(999);
  t.throws(() => c.allocate(), { code: 'ERR_FA_NO_CEP', message: /2 in use and 1 in quarantine \(1000 ms\) of 3/ });
  clock.advance(1);
  t.equal(c.allocate(), 1, 'free again after the quarantine');
  c.release(77);
  t.equal(c.stats.released, 1, 'unknown ids are ignored');
  t.equal(c.stats.exhausted, 2);
  t.throws(() => new CepAllocator({ clock, first: 0 }), RangeError);
});

t.test('model check: never an id in use or released less than quarantineMs ago (fast-check)', async (t) => {
  const op = fc.oneof(fc.constant({ k: 'alloc' as const }), fc.record({ k: fc.constant('release' as const), i: fc.nat() }), fc.record({ k: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 400 }) }));
  const prop = fc.property(fc.array(op, { maxLength: 200 }), fc.integer({ min: 1, max: 12 }), (ops, size) => {
    const clock = new ManualClock();
    const q = 1000;
    const c = new CepAllocator({ clock, quarantineMs: q, first: 5, last: 4 + size });
    const held: number[] = [];
    const releasedAt = new Map<number, number>();
    for (const o of ops) {
      if (o.k === 'wait') clock.advance(o.ms);
      else if (o.k === 'release') {
        if (!held.length) continue;
        const [id] = held.splice(o.i % held.length, 1);
        c.release(id!);
        releasedAt.set(id!, clock.now());
      } else {
        const busy = held.length + [...releasedAt.values()].filter((at) => clock.now() - at < q).length;
        let id: number;
        try {
          id = c.allocate();
        } catch (e) {
          if (!(e instanceof CepError)) throw e;
          if (busy < size) throw new Error(`refused with ${busy} of ${size} busy`);
          continue;
        }
        if (id < 5 || id > 4 + size) throw new Error(`id ${id} outside the range`);
        if (held.includes(id)) throw new Error(`id ${id} handed out twice`);
        const at = releasedAt.get(id);
        if (at !== undefined && clock.now() - at < q) throw new Error(`id ${id} reused ${clock.now() - at} ms after release`);
        held.push(id);
      }
    }
  });
  const r = fc.check(prop, { seed: SEED, numRuns: 500 });
  t.notOk(r.failed, `seed ${SEED}: ${r.counterexample ? JSON.stringify(r.counterexample) : ''} ${String(r.errorInstance ?? '')}`);
});

t.test('IRATI #491: rapid flow create/teardown never gives a new flow an old CEP-id', async (t) => {
  const clock = new ManualClock();
  const quarantineMs = 5000;
  const mk = (addr: number, peer: () => FlowAllocator) => {
    const ceps = new CepAllocator({ clock, quarantineMs, first: 1, last: 8 });
    const fa: FlowAllocator = new FlowAllocator({
      clock,
      localAddress: () => addr,
      lookup: () => 2,
      send: (_to, msg) => {
        const bytes = encodeCdap(msg);
        clock.setTimer(1, () => peer().receive(addr, decodeCdap(bytes)));
      },
      onRequest: () => ({ accept: true, port: 1 }),
      ceps,
      timeoutMs: 50,
    });
    return { fa, ceps };
  };
  const a: { fa: FlowAllocator; ceps: CepAllocator } = mk(1, () => b.fa);
  const b: { fa: FlowAllocator; ceps: CepAllocator } = mk(2, () => a.fa);
  const torn: { at: number; a: number; b: number }[] = [];
  const check = (f: FlowInfo, label: string) => {
    const [fb] = b.fa.flows();
    for (const old of torn) {
      if (clock.now() - old.at >= quarantineMs) continue;
      if (f.localCep === old.a) t.fail(`${label}: requester reuses CEP ${old.a} ${clock.now() - old.at} ms after teardown`);
      if (fb && fb.localCep === old.b) t.fail(`${label}: responder reuses CEP ${old.b} ${clock.now() - old.at} ms after teardown`);
    }
  };
  for (let i = 0; i < 8; i++) {
    const r = await pump(clock, a.fa.allocate({ srcApp: { processName: 'c' }, dstApp: { processName: 's' }, srcPort: 1, qosCube: 0 }));
    if (r.ok !== true) return t.fail(`flow ${i}: ${String((r as { error?: unknown }).error)}`);
    check(r.value, `flow ${i}`);
    torn.push({ at: clock.now(), a: r.value.localCep, b: b.fa.flows()[0]!.localCep });
    a.fa.deallocate(r.value.name);
    clock.advance(10);
  }
  t.equal(torn.length, 8);
  const r9 = await pump(clock, a.fa.allocate({ srcApp: { processName: 'c' }, dstApp: { processName: 's' }, srcPort: 1, qosCube: 0 }));
  t.match((r9 as { error?: unknown }).error, { code: 'ERR_FA_NO_CEP' }, 'all 8 ids in quarantine: refused, not reused');
  clock.advance(quarantineMs);
  const r10 = await pump(clock, a.fa.allocate({ srcApp: { processName: 'c' }, dstApp: { processName: 's' }, srcPort: 1, qosCube: 0 }));
  t.equal(r10.ok, true, 'after the quarantine the ids serve again');
  if (r10.ok === true) check(r10.value, 'flow 10');
});
