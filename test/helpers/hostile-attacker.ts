/**
 * hostile-attacker.ts — the attacker process of the hostile-sequence harness (hostile-seq.ts): runs
 * N hostile cases against one vhost-user socket, each on a fresh connection, and after each case
 * checks that the server still answers a new front-end (GET_FEATURES within the case bound).
 *
 * Cases are the vhost-user fuzz target's message streams (test/fuzz/targets/vhost-user.ts,
 * `streamCase`, sampled with a fixed seed): plausible handshakes followed by arbitrary requests,
 * mutated and truncated messages, messages cut across sendmsg calls, fds of the wrong kind
 * (memfd/devnull/socket as kick/call/err, regions beyond their memfd), memory tables swapped under
 * running queues, descriptor tables and avail rings overwritten with junk, kicks — and the
 * connection dropped wherever the stream ends, often mid-message. One case in ten is instead one
 * of the fuzz target's hazard reproducers (issue #9 items 2-4: a socket or /dev/null as kick fd,
 * a socket as call fd during traffic, a used ring past the end of the memfd), in turn, and one in
 * ten a burst: 16 connections at once, each sending a prefix of a handshake and hanging up
 * mid-message.
 *
 * `node --import tsx hostile-attacker.ts '<json {path, cases, seed, boundMs, gapMs}>'` prints
 * `READY` once its cases are generated, starts at a `GO` line on stdin, then prints
 * `CASE <i> <ms> <kind>` per case, `HANG <i> <what>` when a case or its probe exceeds the bound
 * (then stops), `DEAD <i> <error>` when the server stops accepting, and `DONE <cpu seconds of the attack>` at the end.
 */
import { openSync } from 'node:fs';
import fc from 'fast-check';
import { safeClose } from '../../src/sys/fd.js';
import { native } from '../../src/sys/native.js';
import { encodeMessage } from '../../src/vhost-user/messages.js';
import { HEADER_SIZE, Req } from '../../src/vhost-user/protocol.js';
import { MEMFD_SIZE, handshake, hazardExamples, msgChunks, newFdOfKind, postBuffer, streamCase, type Chunk, type FdKind, type StreamCase } from '../fuzz/targets/vhost-user.js';

interface Config {
  path: string;
  cases: number;
  seed: number;
  boundMs: number;
  /** Pause between cases (0: as fast as it can). */
  gapMs?: number;
}

const cfg = JSON.parse(process.argv[2]!) as Config;
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const devNull = openSync('/dev/null', 'r+');

class Timeout extends Error {}

/** How long a case waits for its end-of-case barrier to be answered (see streamAttack). */
const LINGER_MS = 100;

/** One fuzz stream case against a fresh connection. */
async function streamAttack(c: StreamCase, deadline: number): Promise<void> {
  const frontFd = native.connectUnix(cfg.path);
  const memfd = native.memfdCreateSealed('hostile-guest', MEMFD_SIZE, native.F_SEAL_GROW | native.F_SEAL_SHRINK | native.F_SEAL_SEAL);
  const guest = new Uint8Array(native.mmap(memfd, 0, MEMFD_SIZE));
  const mine: number[] = [frontFd, memfd];
  const kicks: (number | null)[] = [null, null];
  const rx = new Uint8Array(HEADER_SIZE + 4096 + 64);
  let closed = false;
  const makeFd = (kind: FdKind): number => {
    const fd = newFdOfKind(kind, memfd, devNull);
    mine.push(fd);
    return fd;
  };
  let tail = new Uint8Array(0); // the last reply bytes received, for the barrier below
  const drain = (): void => {
    for (;;) {
      let r;
      try {
        r = native.recvMsg(frontFd, rx, 0, rx.length, 4);
      } catch {
        closed = true;
        return;
      }
      if (r === null) return;
      for (const fd of r.fds) safeClose(fd);
      if (r.bytes === 0) {
        closed = true;
        return;
      }
      const t = new Uint8Array(tail.length + r.bytes);
      t.set(tail);
      t.set(rx.subarray(0, r.bytes), tail.length);
      tail = t.slice(-(HEADER_SIZE + 8));
    }
  };
  /** Whether the last bytes received are a whole GET_FEATURES reply (header + u64). */
  const barrierAnswered = (): boolean => {
    if (tail.length < HEADER_SIZE + 8) return false;
    const dv = new DataView(tail.buffer, tail.byteOffset, HEADER_SIZE);
    return dv.getUint32(0, true) === Req.GET_FEATURES && (dv.getUint32(4, true) & 0x4) !== 0 && dv.getUint32(8, true) === 8;
  };
  const kick = (q: number): void => {
    const fd = kicks[q];
    if (fd === null || fd === undefined) return;
    try {
      native.eventfdWrite(fd, 1);
    } catch {
      // replaced by a later SET_VRING_KICK of ours
    }
  };
  const send = async (chunks: Chunk[], kickQueue: number | null): Promise<void> => {
    for (const ch of chunks) {
      if (closed) return;
      if (Date.now() > deadline) throw new Timeout('sending the case');
      const fds = ch.fds.map(makeFd);
      if (kickQueue !== null && fds.length === 1 && ch.fds[0] === 'eventfd') kicks[kickQueue] = fds[0]!;
      try {
        native.sendMsg(frontFd, ch.bytes, 0, ch.bytes.length, fds.length ? fds : null);
      } catch {
        closed = true; // the server closed its end (or its buffer is full: it is not reading)
        return;
      }
      await turn();
      drain();
    }
  };
  try {
    for (const s of [...(c.handshake ? handshake(c.replyAck) : []), ...c.steps]) {
      if (closed) break;
      switch (s.kind) {
        case 'msg': {
          const vf = s.payload.length === 8 ? Number(new DataView(s.payload.buffer, s.payload.byteOffset, 8).getBigUint64(0, true) & 0xffn) : -1;
          await send(msgChunks(s), s.request === Req.SET_VRING_KICK && (vf === 0 || vf === 1) ? vf : null);
          break;
        }
        case 'raw':
          await send([{ bytes: s.bytes, fds: s.fds }], null);
          break;
        case 'guest':
          guest.set(s.bytes.subarray(0, MEMFD_SIZE - s.at), s.at);
          if (s.kick !== null) kick(s.kick);
          await turn();
          drain();
          break;
        case 'post': {
          postBuffer(guest, s);
          kick(s.queue);
          await turn();
          drain();
          break;
        }
        case 'host-send': // the server's side: nothing for a front-end to do
        case 'turn':
          await turn();
          drain();
          break;
      }
    }
    // Unlike the in-process fuzz target, this process does not wait for the server between steps:
    // closing now would end most cases at the server's first reply (EPIPE) with the rest of the
    // stream unread. A GET_FEATURES barrier: once it is answered, the server has read everything
    // before it. A stream cut mid-message swallows the barrier, so it is waited for at most
    // LINGER_MS (then the case ends by hanging up mid-message, which is an attack too).
    if (!closed) {
      const barrier = encodeMessage(Req.GET_FEATURES, 0, new Uint8Array(0));
      try {
        native.sendMsg(frontFd, barrier, 0, barrier.length, null);
      } catch {
        closed = true;
      }
      const end = Math.min(deadline, Date.now() + LINGER_MS);
      tail = new Uint8Array(0);
      while (!closed && !barrierAnswered() && Date.now() < end) {
        await sleep(1);
        drain();
      }
    }
  } finally {
    native.munmap(guest.buffer as ArrayBuffer);
    for (const fd of mine) safeClose(fd);
  }
}

/** Many connections at once, each a prefix of a handshake, cut mid-message, then hung up. */
async function burst(rnd: () => number): Promise<void> {
  const fds: number[] = [];
  try {
    for (let i = 0; i < 16; i++) {
      let fd: number;
      try {
        fd = native.connectUnix(cfg.path);
      } catch {
        continue; // backlog full or refused over the limit: also fine
      }
      fds.push(fd);
      const steps = handshake(true).slice(0, 1 + Math.floor(rnd() * 6)).filter((s) => s.kind === 'msg' && s.fds.length === 0);
      const bytes = steps.flatMap((s) => (s.kind === 'msg' ? [...encodeMessage(s.request, s.flags, s.payload)] : []));
      const cut = Math.floor(rnd() * bytes.length);
      try {
        native.sendMsg(fd, Uint8Array.from(bytes.slice(0, cut)), 0, cut, null);
      } catch {
        // refused or closed: fine
      }
    }
    await turn();
  } finally {
    for (const fd of fds) safeClose(fd);
  }
}

/**
 * A fresh front-end must get GET_FEATURES answered before `deadline`. A refused or reset
 * connection is retried (the server may still be tearing down the case's connections); still
 * refused at the deadline means the server is gone, anything else that it hangs.
 */
async function probe(deadline: number): Promise<void> {
  let last = '';
  while (Date.now() <= deadline) {
    let fd = -1;
    try {
      fd = native.connectUnix(cfg.path);
      const req = encodeMessage(Req.GET_FEATURES, 0, new Uint8Array(0));
      native.sendMsg(fd, req, 0, req.length, null);
      const buf = new Uint8Array(HEADER_SIZE + 8);
      let got = 0;
      while (got < buf.length && Date.now() <= deadline) {
        const r = native.recvMsg(fd, buf, got, buf.length - got, 0);
        if (r === null) await sleep(1);
        else if (r.bytes === 0) throw new Error('the server closed the probe connection');
        else got += r.bytes;
      }
      if (got === buf.length) return;
      last = 'no GET_FEATURES reply';
    } catch (e) {
      last = (e as Error).message;
      await sleep(2);
    } finally {
      if (fd >= 0) safeClose(fd);
    }
  }
  if (/ECONNREFUSED|ENOENT/.test(last)) throw new Error(`probe: ${last}`);
  throw new Timeout(`probe: ${last}`);
}

async function main(): Promise<void> {
  const cases = fc.sample(streamCase, { seed: cfg.seed, numRuns: cfg.cases });
  const hazards = hazardExamples();
  let s = cfg.seed >>> 0 || 1;
  const rnd = (): number => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  console.log('READY');
  await new Promise<void>((resolve) => {
    let got = '';
    process.stdin.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes('GO\n')) resolve();
    });
  });
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < cfg.cases; i++) {
    const t0 = Date.now();
    const deadline = t0 + cfg.boundMs;
    const kind = i % 10 === 9 ? 'burst' : i % 10 === 4 ? 'hazard' : 'stream';
    try {
      if (kind === 'burst') await burst(rnd);
      else if (kind === 'hazard') await streamAttack(hazards[Math.floor(i / 10) % hazards.length]!, deadline);
      else await streamAttack(cases[i]!, deadline);
      await probe(deadline);
    } catch (e) {
      if (e instanceof Timeout) {
        console.log(`HANG ${i} ${e.message} after ${Date.now() - t0} ms`);
        return;
      }
      console.log(`DEAD ${i} ${(e as Error).message}`);
      return;
    }
    console.log(`CASE ${i} ${Date.now() - t0} ${kind}`);
    if (cfg.gapMs) await sleep(cfg.gapMs);
  }
  const cpu = process.cpuUsage(cpu0);
  console.log(`DONE ${(cpu.user + cpu.system) / 1e6}`);
}

await main();
safeClose(devNull);
process.exit(0);
