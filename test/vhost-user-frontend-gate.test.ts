/**
 * vhost-user-frontend-gate.test.ts — a socket whose front-ends misbehave faster than allowed stops
 * accepting for a while (src/vhost-user/frontend-gate.ts), so a reconnect storm of one bad VM costs
 * the others little; well-behaved front-ends are never charged, and another socket never waits.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FrontendGate } from '../src/vhost-user/frontend-gate.js';
import { MAX_REJECTED_REQUESTS } from '../src/vhost-user/connection.js';
import { bit, ProtoFeature, VirtioFeature } from '../src/vhost-user/protocol.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { FrontendRequestError, VhostUserFrontend } from './frontend/frontend.js';
import { LoopbackDevice } from './frontend/loopback-device.js';

t.test('the bucket: a burst free, then one token per 1/rate, debt bounded by one burst', async (tt) => {
  let now = 0;
  const g = new FrontendGate({ rate: 10, burst: 3, now: () => now });
  tt.equal(g.waitMs(), 0, 'full at start');
  g.charge();
  g.charge();
  tt.equal(g.waitMs(), 0, 'one token left after two charges');
  g.charge();
  tt.equal(g.waitMs(), 100, 'empty: the next token is 100 ms away at 10/s');
  now += 100;
  tt.equal(g.waitMs(), 0, 'a token back after 100 ms');
  for (let i = 0; i < 100; i++) g.charge();
  tt.equal(g.waitMs(), 400, 'a storm is at most one burst in debt: (1 - (-3)) / 10 s');
  now += 10_000;
  tt.equal(g.waitMs(), 0, 'forgiven after a quiet while');
  tt.equal(g.charged, 103);
  tt.equal(g.pauses, 2);
  tt.throws(() => new FrontendGate({ rate: 0 }), RangeError);
  tt.throws(() => new FrontendGate({ burst: 0 }), RangeError);
});

const dir = mkdtempSync(join(tmpdir(), 'vmpi-gate-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Connect, send a request this back-end does not know without asking for an ack (a protocol error), wait for the close. */
async function misbehave(path: string): Promise<number> {
  const t0 = performance.now();
  const fe = new VhostUserFrontend(path, { timeoutMs: 5000 });
  try {
    await fe.request(9999, undefined, { reply: false });
    await fe.waitClosed(5000);
  } finally {
    fe.close();
  }
  return performance.now() - t0;
}

t.test('a storm of protocol errors on one socket pauses its accepting; another socket and a good front-end after it are served', async (tt) => {
  const bad = new VhostUserServer({ path: join(dir, 'bad.sock'), createDevice: () => new LoopbackDevice(), misbehaviourRate: 1, misbehaviourBurst: 3 }).listen();
  const good = new VhostUserServer({ path: join(dir, 'good.sock'), createDevice: () => new LoopbackDevice(), misbehaviourRate: 5, misbehaviourBurst: 3 }).listen();
  tt.teardown(() => {
    bad.close();
    good.close();
  });
  const took: number[] = [];
  for (let i = 0; i < 6; i++) took.push(await misbehave(join(dir, 'bad.sock')));
  tt.same(bad.misbehaviour.connections, 6, 'every protocol error charged');
  tt.ok(bad.misbehaviour.pauses >= 2, `accepting paused (${bad.misbehaviour.pauses} pauses)`);
  // Lax upper bound (a loaded machine): the burst never waits for a token (1 s each).
  tt.ok(Math.max(...took.slice(0, 3)) < 1000, `the burst is served at once (${took.slice(0, 3).map((x) => x.toFixed(0)).join(', ')} ms)`);
  // After the burst each bad connection waits for a token: 1 s each at 1/s, so at least half of
  // that even if this loop was slow between connections.
  tt.ok(took.slice(3).every((x) => x >= 500), `then each waits for its token (${took.slice(3).map((x) => x.toFixed(0)).join(', ')} ms)`);

  // The other socket never waits, and is never charged by the well-behaved front-end.
  const t0 = performance.now();
  const fe = new VhostUserFrontend(join(dir, 'good.sock'), { timeoutMs: 5000 });
  await fe.getFeatures();
  tt.ok(performance.now() - t0 < 1000, 'another socket answers (lax bound: a loaded machine)');
  tt.equal(good.misbehaviour.pauses, 0, 'and never paused');
  fe.close();
  await new Promise((r) => setTimeout(r, 50));
  tt.equal(good.misbehaviour.connections, 0, 'a clean disconnect is not misbehaviour');

  // The attacked socket serves a good front-end once its token is back (bounded wait).
  const fe2 = new VhostUserFrontend(join(dir, 'bad.sock'), { timeoutMs: 5000 });
  const features = await fe2.getFeatures();
  tt.ok(typeof features === 'bigint', 'the attacked socket serves again');
  fe2.close();
});

t.test('a connection that keeps sending refused requests is closed after MAX_REJECTED_REQUESTS, and charged once', async (tt) => {
  const srv = new VhostUserServer({ path: join(dir, 'nack.sock'), createDevice: () => new LoopbackDevice() }).listen();
  tt.teardown(() => srv.close());
  const fe = new VhostUserFrontend(join(dir, 'nack.sock'), { timeoutMs: 5000 });
  tt.teardown(() => fe.close());
  await fe.setFeatures((await fe.getFeatures()) & (bit(VirtioFeature.PROTOCOL_FEATURES) | bit(VirtioFeature.VERSION_1)));
  await fe.setProtocolFeatures((await fe.getProtocolFeatures()) & bit(ProtoFeature.REPLY_ACK));
  tt.ok(fe.replyAck, 'REPLY_ACK negotiated');
  let refused = 0;
  let closedAt = -1;
  for (let i = 0; i < MAX_REJECTED_REQUESTS + 5; i++) {
    try {
      await fe.request(99, new Uint8Array(0));
    } catch (e) {
      if (fe.closed) {
        closedAt = i;
        break;
      }
      if (!(e instanceof FrontendRequestError)) throw e;
      refused++;
    }
  }
  tt.ok(refused >= MAX_REJECTED_REQUESTS, `${refused} requests refused before the close`);
  tt.ok(closedAt >= MAX_REJECTED_REQUESTS && closedAt <= MAX_REJECTED_REQUESTS + 1, `closed after the limit (request ${closedAt})`);
  const deadline = Date.now() + 2000;
  while (srv.connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  tt.equal(srv.connections.size, 0, 'the server dropped it');
  tt.equal(srv.misbehaviour.connections, 1, 'one connection charged once, however many refusals');
});
