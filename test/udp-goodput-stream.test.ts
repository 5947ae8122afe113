/**
 * udp-goodput-stream.test.ts — the byte-stream modes of guest-driver/tools/udp-goodput.c that
 * bench:fig4a's virtio-serial series runs (stream-send, stream-recv), on the host over unix
 * sockets, with no QEMU: a relay here joins the sender's connection to the receiver's, as QEMU's
 * chardev joins the host end to the guest's port. Checked: what arrives is counted in whole SDUs
 * and reads, the receiver discards what was in the stream before it was READY, and a sender whose
 * peer never reads still ends at its deadline (non-blocking writes and poll) instead of hanging.
 * Nothing is timed beyond bounds on waits.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseResults } from './helpers/pattern.js';

const ROOT = resolve(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'vmpi-stream-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const BIN = join(dir, 'udp-goodput');
const cc = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', `-I${join(ROOT, 'guest-driver')}`, '-o', BIN, join(ROOT, 'guest-driver/tools/udp-goodput.c')], { encoding: 'utf8' });

function run(args: string[], limitMs: number): Promise<{ rc: number | null; out: string; ms: number }> {
  return new Promise((res) => {
    const t0 = Date.now();
    const p = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const kill = setTimeout(() => p.kill('SIGKILL'), limitMs);
    p.on('exit', (rc) => {
      clearTimeout(kill);
      res({ rc, out, ms: Date.now() - t0 });
    });
  });
}

/** A unix socket server; `conns` collects its connections in order. */
async function server(name: string): Promise<{ path: string; conns: Socket[]; close: () => void }> {
  const path = join(dir, name);
  const conns: Socket[] = [];
  const srv = createServer((c) => {
    c.on('error', () => {});
    conns.push(c);
  });
  await new Promise<void>((r) => srv.listen(path, r));
  return { path, conns, close: () => (conns.forEach((c) => c.destroy()), srv.close()) };
}

const until = async (ok: () => boolean, ms: number, what: string): Promise<void> => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

t.test('the tool builds', async (t) => {
  t.equal(cc.status, 0, cc.stderr);
});

t.test('stream-send → relay → stream-recv: whole SDUs counted, stale bytes discarded', { skip: cc.status !== 0 }, async (t) => {
  const s = await server('relay.sock');
  t.teardown(s.close);
  // The receiver connects first; bytes already in its stream are a previous run's.
  const recv = run(['-w', '10000', '-t', '1000', 'stream-recv', `unix:${s.path}`, '1000', '300'], 20_000);
  await until(() => s.conns.length === 1, 10_000, 'the receiver');
  s.conns[0]!.write(Buffer.alloc(5000, 0xee));
  // READY comes only after it has drained that (100 ms without data).
  await new Promise((r) => setTimeout(r, 400));
  const send = run(['stream-send', `unix:${s.path}`, '1000', '1500'], 20_000);
  await until(() => s.conns.length === 2, 10_000, 'the sender');
  s.conns[1]!.pipe(s.conns[0]!);
  const [r, w] = await Promise.all([recv, send]);
  t.equal(r.rc, 0, r.out);
  t.equal(w.rc, 0, w.out);
  const rr = parseResults(r.out).find((x) => x.kind === 'RESULT')!;
  const ww = parseResults(w.out).find((x) => x.kind === 'RESULT')!;
  t.match(r.out, /READY mode=stream-recv target=unix:\S+ size=1000\n/);
  t.equal(rr.status, 'ok');
  t.ok(Number(rr.reads) > 0, 'reads counted');
  t.equal(Number(rr.datagrams), Math.floor(Number(rr.bytes) / 1000), 'datagrams = whole SDUs of the bytes counted');
  t.notOk('size_min' in rr, 'no datagram sizes for a stream');
  t.ok(Number(rr.bytes) <= Number(ww.bytes), 'never more than was sent (the stale 5000 bytes are not counted)');
  t.equal(Number(ww.bytes), Number(ww.datagrams) * 1000, 'the sender counts whole SDUs');
});

t.test('a sender whose peer never reads ends at its deadline', { skip: cc.status !== 0 }, async (t) => {
  const s = await server('stuck.sock');
  t.teardown(s.close);
  const w = await run(['stream-send', `unix:${s.path}`, '4000', '500'], 15_000);
  t.equal(w.rc, 0, w.out);
  t.ok(w.ms < 10_000, `ended after ${w.ms} ms, not killed at 15 s`);
  const ww = parseResults(w.out).find((x) => x.kind === 'RESULT')!;
  t.equal(ww.status, 'ok');
  t.ok(Number(ww.datagrams) > 0, 'it filled the socket buffer first');
});

t.test('bad arguments: size 0 and a missing socket', { skip: cc.status !== 0 }, async (t) => {
  const z = await run(['stream-send', `unix:${join(dir, 'none.sock')}`, '0', '100'], 5000);
  t.equal(z.rc, 1);
  t.match(z.out, /stream-send needs SIZE > 0/);
  const m = await run(['stream-recv', `unix:${join(dir, 'none.sock')}`, '100', '100'], 5000);
  t.equal(m.rc, 1);
  t.match(m.out, /ERROR mode=stream-recv op=connect errno=ENOENT/);
});
