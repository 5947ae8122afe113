/**
 * ipc-protocol.ts — fuzz target: frame bodies of the IPC control protocol (src/dif/ipc/protocol.ts)
 * through decodeBody → parseClientRequest (daemon side) and parseDaemonMessage (client side).
 *
 * Inputs: random bytes, JSON values, near-valid requests and daemon messages with one field
 * replaced by a hostile value (huge numbers, deep nesting, wrong types, long strings). Only
 * IpcProtocolError may escape; what is accepted must respect the documented bounds.
 *
 * `ipc-stream`: the same bodies framed (and some bad lengths and stray bytes) as one byte stream,
 * cut at random points, sometimes with an fd, into a FramedConn (src/dif/ipc/conn.ts) as the
 * daemon uses it. Nothing may escape its callbacks; every message it emits is an object.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { FramedConn } from '../../../src/dif/ipc/conn.js';
import { native } from '../../../src/sys/native.js';
import { IpcProtocolError, MAX_REASON_CHARS, decodeBody, encodeFrame, parseClientRequest, parseDaemonMessage } from '../../../src/dif/ipc/protocol.js';
import { InvariantError, type FuzzTarget } from '../runner.js';
import { hex } from './util.js';

const enc = new TextEncoder();
const MAX_ID = 2 ** 31 - 1;

/** JSON texts of values that break naive checks (text, so deep nesting never goes through JSON.stringify here). */
const hostile: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom<unknown>(null, true, false, 0, -1, 1, 1.5, MAX_ID, MAX_ID + 1, 2 ** 53, 1e308, -0, '', 'x', [], {}, '__proto__', 'constructor', 'toString').map((v) => JSON.stringify(v)),
  fc.integer().map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((v) => JSON.stringify(v)),
  fc.constantFrom('1e999', '-1e999', '1.0', '2147483647.0000001', '"\\ud800"', '"\\u0000"'),
  fc.string({ maxLength: 40 }).map((v) => JSON.stringify(v)),
  fc.string({ minLength: 1000, maxLength: 1100 }).map((v) => JSON.stringify(v)),
  fc.nat({ max: 30000 }).map((n) => '['.repeat(n) + ']'.repeat(n)),
  fc.nat({ max: 13000 }).map((n) => '{"a":'.repeat(n) + '1' + '}'.repeat(n)),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
);

const ops = ['list_difs', 'register', 'unregister', 'allocate', 'accept', 'reject', 'deallocate', 'result', 'error', 'flow_request', 'request_cancelled', 'flow_deallocated'];
const fields = ['v', 'id', 'op', 'dif', 'app', 'src', 'dst', 'qos', 'timeoutMs', 'request', 'reason', 'flow', 'difs', 'code', 'message', 'peerReason', 'remoteApp', 'cause', 'datapath', '__proto__'];

/** A request or daemon message with some fields replaced (or added) by hostile values. */
const nearValid: fc.Arbitrary<string> = fc
  .record({
    op: fc.constantFrom(...ops),
    id: fc.integer({ min: 1, max: 100 }),
    extra: fc.array(fc.tuple(fc.constantFrom(...fields), hostile), { maxLength: 4 }),
    nested: fc.array(fc.tuple(fc.constantFrom('qos', 'flow'), fc.constantFrom('reliable', 'inOrder', 'maxSdu', 'flow', 'portId', 'dif', 'datapath', 'x'), hostile), { maxLength: 2 }),
  })
  .map(({ op, id, extra, nested }) => {
    const qos: Record<string, string> = { reliable: 'true', inOrder: 'false', maxSdu: '1000' };
    const flowObj: Record<string, string> = { flow: '1', portId: '1', dif: '"d"', localApp: '"a"', remoteApp: '"b"' };
    for (const [where, k, v] of nested) (where === 'qos' ? qos : flowObj)[k] = v;
    const obj = (o: Record<string, string>): string => `{${Object.entries(o).map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;
    const q = obj(qos);
    flowObj.qos = q;
    const o: Record<string, string> = {
      v: '1', id: String(id), op: JSON.stringify(op), dif: '"hv.vmpi-1"', app: '"a"', src: '"a"', dst: '"b"', qos: q, request: '1', reason: '"r"',
      flow: op === 'result' ? obj(flowObj) : '1', code: '"timeout"', message: '"m"', remoteApp: '"b"', cause: '"peer"', difs: '[{"name":"d","address":1}]',
    };
    for (const [k, v] of extra) o[k] = v;
    return obj(o);
  });

export type IpcInput = Uint8Array;

const arbitrary: fc.Arbitrary<IpcInput> = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 256 }) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => enc.encode(JSON.stringify(v) ?? 'null')) },
  { weight: 6, arbitrary: nearValid.map((o) => enc.encode(o)) },
  {
    weight: 1,
    arbitrary: fc.tuple(nearValid, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([o, at, b]) => {
      const bytes = enc.encode(o);
      if (bytes.length > 0) bytes[at % bytes.length] = b;
      return bytes;
    }),
  },
);

function checkRequest(r: ReturnType<typeof parseClientRequest>): void {
  if (!Number.isInteger(r.id) || r.id < 1 || r.id > MAX_ID) throw new InvariantError(`accepted id ${r.id}`);
  for (const [k, v] of Object.entries(r)) {
    if (typeof v === 'string' && v.length > 1024) throw new InvariantError(`accepted ${k} of ${v.length} characters`);
  }
  if ((r.op === 'reject' || r.op === 'deallocate') && r.reason !== undefined && r.reason.length > MAX_REASON_CHARS) throw new InvariantError('reason not cut');
}

/** The daemon echoes an IpcProtocolError's message in an error frame: it must fit one. */
function answerable(e: unknown): void {
  if (!(e instanceof IpcProtocolError)) return;
  try {
    encodeFrame({ op: 'error', id: e.id, code: 'malformed', message: e.message });
  } catch (f) {
    throw new InvariantError(`the error cannot be sent back: ${(f as Error).message} (message of ${e.message.length} characters: ${e.message.slice(0, 80)}…)`);
  }
}

export const ipcProtocolTarget: FuzzTarget<IpcInput> = {
  name: 'ipc-protocol',
  description: 'IPC frame bodies → decodeBody → parseClientRequest / parseDaemonMessage',
  arbitrary,
  expected: (e) => e instanceof IpcProtocolError,
  show: hex,
  examples: [
    // Their errors once quoted the value whole and could not be sent back (the daemon died).
    enc.encode(JSON.stringify({ v: '"'.repeat(30000), id: 1, op: 'list_difs' })),
    enc.encode(`{"v":${'{"a":'.repeat(12000)}1${'}'.repeat(12000)},"id":1}`),
    // parseDaemonMessage overflowed the stack quoting this op (found in a 240 s run).
    enc.encode(`{"v":1,"id":1,"op":${'{"a":'.repeat(12000)}1${'}'.repeat(12000)}}`),
  ],
  run(body) {
    let obj: Record<string, unknown>;
    try {
      obj = decodeBody(body);
    } catch (e) {
      answerable(e);
      throw e;
    }
    // A body is either a request (daemon side) or a daemon message (client side): rejected only
    // when both parsers refuse it.
    const errors: unknown[] = [];
    try {
      checkRequest(parseClientRequest(obj));
    } catch (e) {
      errors.push(e);
    }
    try {
      parseDaemonMessage(obj);
    } catch (e) {
      errors.push(e);
    }
    for (const e of errors) {
      if (!(e instanceof IpcProtocolError)) throw e;
      answerable(e);
    }
    if (errors.length === 2) throw errors[0];
  },
};

// ---------------------------------------------------------------------------------------------
// The framing, over a real socket (src/dif/ipc/conn.ts, as the daemon uses it: no fds accepted)

export interface IpcStreamCase {
  /** Each chunk is one sendmsg; `fd` sends an eventfd with it (the daemon accepts none). */
  chunks: { bytes: Uint8Array; fd: boolean }[];
}

function frame(body: Uint8Array, len = body.length): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, len >>> 0, false);
  out.set(body, 4);
  return out;
}

const streamBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 6, arbitrary: arbitrary.map((b) => frame(b)) },
  { weight: 1, arbitrary: fc.tuple(arbitrary, fc.constantFrom(0, 1, 65536, 65537, 0xffffffff)).map(([b, len]) => frame(b, len)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 16 }) },
);

const streamCase: fc.Arbitrary<IpcStreamCase> = fc
  .tuple(fc.array(streamBytes, { minLength: 1, maxLength: 8 }), fc.array(fc.nat({ max: 2000 }), { maxLength: 4 }), fc.option(fc.nat({ max: 7 }), { freq: 6 }))
  .map(([frames, cuts, fdAt]) => {
    const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let o = 0;
    for (const f of frames) {
      all.set(f, o);
      o += f.length;
    }
    const points = [...new Set(cuts.map((c) => c % Math.max(1, all.length)).filter((c) => c > 0))].sort((a, b) => a - b);
    const chunks: { bytes: Uint8Array; fd: boolean }[] = [];
    let from = 0;
    for (const p of [...points, all.length]) {
      chunks.push({ bytes: all.subarray(from, p), fd: fdAt !== null && chunks.length === fdAt });
      from = p;
    }
    return { chunks: chunks.filter((c) => c.bytes.length > 0) };
  });

let sockDir = '';
let listenFd = -1;
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function runStream(c: IpcStreamCase): Promise<void> {
  const front = native.connectUnix(join(sockDir, 'ipc.sock'));
  const conn = new FramedConn(native.accept(listenFd), 0);
  const bad: string[] = [];
  let closed = false;
  conn.on('message', (msg) => {
    if (closed) bad.push('a message after close');
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) bad.push(`a message that is not an object: ${JSON.stringify(msg)}`);
    try {
      parseClientRequest(msg);
    } catch (e) {
      if (!(e instanceof IpcProtocolError)) bad.push(`parseClientRequest threw ${(e as Error)?.stack ?? String(e)}`);
    }
  });
  conn.on('malformed', (e) => {
    if (!(e instanceof IpcProtocolError)) bad.push(`malformed with ${String(e)}`);
  });
  conn.on('close', () => void (closed = true));
  const mine = [front];
  try {
    for (const ch of c.chunks) {
      if (closed) break;
      const fds = ch.fd ? [native.eventfd(0)] : null;
      if (fds) mine.push(...fds);
      try {
        native.sendMsg(front, ch.bytes, 0, ch.bytes.length, fds);
      } catch {
        break; // the other end closed
      }
      await turn();
    }
    await turn();
  } finally {
    conn.close('fuzz case done');
    for (const fd of mine) {
      try {
        native.close(fd);
      } catch {
        // already closed
      }
    }
  }
  if (bad.length) throw new InvariantError(bad.join('; '));
}

export const ipcStreamTarget: FuzzTarget<IpcStreamCase> = {
  name: 'ipc-stream',
  description: 'IPC control byte streams (frames cut anywhere, bad lengths, an fd) → FramedConn over a Unix socket',
  arbitrary: streamCase,
  expected: () => false,
  caseTimeoutMs: 2000,
  run: runStream,
  setup() {
    sockDir = mkdtempSync(join(tmpdir(), 'vmpi-fuzz-ipc-'));
    listenFd = native.listenUnix(join(sockDir, 'ipc.sock'), 4);
  },
  teardown() {
    native.close(listenFd);
    rmSync(sockDir, { recursive: true, force: true });
  },
  show: (c) => JSON.stringify(c.chunks.map((ch) => ({ fd: ch.fd, bytes: hex(ch.bytes) }))),
};
