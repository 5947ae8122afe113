/**
 * ipc-protocol.ts — fuzz target: frame bodies of the IPC control protocol (src/dif/ipc/protocol.ts)
 * through decodeBody → parseClientRequest (daemon side) and parseDaemonMessage (client side).
 *
 * Inputs: random bytes, JSON values, near-valid requests and daemon messages with one field
 * replaced by a hostile value (huge numbers, deep nesting, wrong types, long strings). Only
 * IpcProtocolError may escape; what is accepted must respect the documented bounds.
 */
import fc from 'fast-check';
import { IpcProtocolError, MAX_REASON_CHARS, decodeBody, parseClientRequest, parseDaemonMessage } from '../../../src/dif/ipc/protocol.js';
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

export const ipcProtocolTarget: FuzzTarget<IpcInput> = {
  name: 'ipc-protocol',
  description: 'IPC frame bodies → decodeBody → parseClientRequest / parseDaemonMessage',
  arbitrary,
  expected: (e) => e instanceof IpcProtocolError,
  show: hex,
  run(body) {
    const obj = decodeBody(body);
    // A body is either a request (daemon side) or a daemon message (client side): rejected only
    // when both parsers refuse it.
    let clientErr: unknown = null;
    try {
      checkRequest(parseClientRequest(obj));
    } catch (e) {
      if (!(e instanceof IpcProtocolError)) throw e;
      clientErr = e;
    }
    try {
      parseDaemonMessage(obj);
    } catch (e) {
      if (!(e instanceof IpcProtocolError) || clientErr) throw e;
    }
  },
};
