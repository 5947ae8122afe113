/**
 * protocol-bounds.test.ts — the IPC protocol's error messages stay short whatever a peer sends
 * (src/dif/ipc/protocol.ts), so the daemon can always echo them in an `error` frame.
 *
 * Found by the ipc-protocol fuzz target: a request whose `v` (or a QoS key) was a 60 KB string or
 * a deeply nested object produced an IpcProtocolError quoting it whole; the daemon's answer then
 * exceeded the 64 KiB frame limit and encodeFrame's RangeError escaped the socket callback,
 * ending the daemon and with it `vmpi serve`. On the client side, quoting a deeply nested `op`
 * from a daemon overflowed the stack (RangeError out of parseDaemonMessage).
 */
import t from 'tap';
import { decodeBody, encodeFrame, IpcProtocolError, parseClientRequest, parseDaemonMessage } from '../../src/dif/ipc/protocol.js';
import { ipcSetup, rawSession } from './helpers.js';

const LONG = '"'.repeat(30000);
const DEEP = JSON.parse('{"a":'.repeat(5000) + '1' + '}'.repeat(5000)) as unknown;

function errorOf(fn: () => unknown): IpcProtocolError {
  try {
    fn();
  } catch (e) {
    if (e instanceof IpcProtocolError) return e;
    throw e;
  }
  throw new Error('expected an IpcProtocolError');
}

t.test('error messages quote at most a short prefix of what was received', async (t) => {
  const cases: [string, () => unknown, RegExp][] = [
    ['long version', () => decodeBody(Buffer.from(JSON.stringify({ v: LONG, id: 1 }))), /^unsupported protocol version "(\\"){64}"…; this daemon speaks v=1$/],
    ['nested version', () => decodeBody(Buffer.from(JSON.stringify({ v: DEEP, id: 1 }))), /^unsupported protocol version an object; /],
    ['long QoS key', () => parseClientRequest({ v: 1, id: 2, op: 'allocate', dif: 'd', src: 'a', dst: 'b', qos: { [LONG]: true } }), /^unknown QoS field "(\\"){64}"…$/],
    ['long daemon op', () => parseDaemonMessage({ op: LONG }), /^unknown daemon message "(\\"){64}"…$/],
    // Quoting this one whole overflowed the stack (RangeError) in a client reading a hostile daemon.
    ['nested daemon op', () => parseDaemonMessage({ v: 1, id: 1, op: DEEP }), /^unknown daemon message an object$/],
    ['nested datapath', () => parseDaemonMessage({ op: 'result', id: 1, flow: { flow: 1, portId: 1, dif: 'd', localApp: 'a', remoteApp: 'b', qos: { reliable: true, inOrder: true, maxSdu: 1 }, datapath: [DEEP] } }), /^unknown flow datapath a list: /],
  ];
  for (const [what, fn, re] of cases) {
    const e = errorOf(fn);
    t.match(e.message, re, what);
    t.ok(e.message.length < 300, `${what}: ${e.message.length} characters`);
    t.doesNotThrow(() => encodeFrame({ op: 'error', id: e.id, code: 'malformed', message: e.message }), `${what}: the answer fits a frame`);
  }
  // Short values are still quoted as before.
  t.equal(errorOf(() => decodeBody(Buffer.from('{"v":2}'))).message, 'unsupported protocol version 2; this daemon speaks v=1');
  t.equal(errorOf(() => parseClientRequest({ v: 1, id: 3, op: 'allocate', dif: 'd', src: 'a', dst: 'b', qos: { fast: true } })).message, 'unknown QoS field "fast"');
});

t.test('the daemon answers a huge malformed request and keeps serving', async (t) => {
  const s = ipcSetup(t);
  const { raw, next } = rawSession(t, s.hostDaemon.socketPath);
  raw(JSON.stringify({ v: LONG, id: 1, op: 'list_difs' }));
  t.match(await next(), { op: 'error', id: 1, code: 'malformed', message: /^unsupported protocol version "/ });
  raw(JSON.stringify({ v: 1, id: 2, op: 'allocate', dif: 'hv.vmpi-7', src: 'a', dst: 'b', qos: { [LONG]: true } }));
  t.match(await next(), { op: 'error', id: 2, code: 'malformed', message: /^unknown QoS field / });
  raw(JSON.stringify({ v: 1, id: 3, op: 'list_difs' }));
  t.match(await next(), { op: 'result', id: 3, difs: [{ name: 'hv.vmpi-7' }] }, 'the same session still works');
});
