/**
 * The shim-hv control codec (src/dif/shim-hv/control.ts + control.proto): round trips of each
 * message, the wire version, and every malformed form rejected with a typed ControlMessageError
 * (never another exception), including random garbage.
 */
import { readFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import protobuf from 'protobufjs';
import {
  CONTROL_VERSION,
  ControlMessageError,
  MAX_CONTROL_MESSAGE_BYTES,
  MAX_REASON_LENGTH,
  controlMessageType,
  decodeControl,
  encodeControl,
  type ControlMessage,
} from '../../src/dif/shim-hv/control.js';

const request: ControlMessage = {
  kind: 'allocate_request',
  channel: 2,
  src: { processName: 'client', processInstance: '1' },
  dst: { processName: 'server', processInstance: '1', entityName: 'data', entityInstance: '7' },
  qos: { reliable: true, inOrder: true, maxSdu: 1500 },
  difName: 'hv.vmpi-7',
};

/** Encode an arbitrary object with the schema, bypassing every check. */
function raw(obj: Record<string, unknown>): Uint8Array {
  const T = controlMessageType();
  return T.encode(T.fromObject(obj)).finish();
}

function rejects(t: Test, bytes: Uint8Array, reason: string, extra: Partial<Pick<ControlMessageError, 'kind' | 'channel'>> = {}, msg?: string): void {
  try {
    decodeControl(bytes);
    t.fail(`${msg ?? reason}: decoded`);
  } catch (e) {
    t.ok(e instanceof ControlMessageError, `${msg ?? reason}: a ControlMessageError`);
    t.match(e, { reason, ...extra }, msg ?? reason);
  }
}

t.test('round trips', async (t) => {
  t.same(decodeControl(encodeControl(request)), request);
  const minimal: ControlMessage = { ...request, src: { processName: 'c' }, dst: { processName: 's' }, qos: { reliable: false, inOrder: false, maxSdu: 0 }, difName: '' };
  t.same(decodeControl(encodeControl(minimal)), minimal);
  const accept: ControlMessage = { kind: 'allocate_response', channel: 0xffffffff, result: 'accept', reason: '' };
  t.same(decodeControl(encodeControl(accept)), accept, 'largest u32 channel');
  const reject: ControlMessage = { kind: 'allocate_response', channel: 3, result: 'reject', reason: 'unknown application' };
  t.same(decodeControl(encodeControl(reject)), reject);
  const dealloc: ControlMessage = { kind: 'deallocate', channel: 9, reason: 'bye', confirm: false };
  t.same(decodeControl(encodeControl(dealloc)), dealloc);
  const confirm: ControlMessage = { kind: 'deallocate', channel: 9, reason: '', confirm: true };
  t.same(decodeControl(encodeControl(confirm)), confirm);
});

t.test('the .proto in the repository is what the codec uses, and carries the version', async (t) => {
  const text = readFileSync(new URL('../../src/dif/shim-hv/control.proto', import.meta.url), 'utf8');
  const root = protobuf.parse(text).root;
  const T = root.lookupType('vmpi.shimhv.v1.ControlMessage');
  const decoded = T.toObject(T.decode(encodeControl(request)), { oneofs: true }) as Record<string, unknown>;
  t.equal(decoded.version, CONTROL_VERSION);
  t.equal(decoded.body, 'allocateRequest');
  t.equal(CONTROL_VERSION, 1);
});

t.test('long reasons are cut to MAX_REASON_LENGTH', async (t) => {
  const m = decodeControl(encodeControl({ kind: 'deallocate', channel: 1, reason: 'x'.repeat(5000), confirm: false }));
  t.equal(m.kind, 'deallocate');
  if (m.kind === 'deallocate') t.equal(m.reason.length, MAX_REASON_LENGTH);
  const r = decodeControl(raw({ version: 1, allocateResponse: { channel: 1, result: 2, reason: 'y'.repeat(2000) } }));
  if (r.kind === 'allocate_response') t.equal(r.reason.length, MAX_REASON_LENGTH, 'also on decode');
  else t.fail('wrong kind');
});

t.test('malformed messages are rejected with a reason', async (t) => {
  rejects(t, Uint8Array.from([0xff, 0xff, 0xff]), 'undecodable', {}, 'garbage bytes');
  rejects(t, Uint8Array.from([0x12, 0x05, 1, 2]), 'undecodable', {}, 'truncated length-delimited field');
  rejects(t, new Uint8Array(MAX_CONTROL_MESSAGE_BYTES + 1), 'too_large');
  rejects(t, new Uint8Array(0), 'unsupported_version', {}, 'empty SDU: no version');
  rejects(t, encodeControl(request, { version: 2 }), 'unsupported_version', { kind: 'allocate_request', channel: 2 }, 'version 2 (kind and channel still known)');
  rejects(t, raw({ allocateResponse: { channel: 1, result: 1 } }), 'unsupported_version', {}, 'version missing');
  rejects(t, raw({ version: 1 }), 'no_body');
  rejects(t, encodeControl({ ...request, channel: 0 }, { unchecked: true }), 'bad_channel', { kind: 'allocate_request' }, 'allocate on channel 0');
  rejects(t, raw({ version: 1, deallocate: { reason: 'x' } }), 'bad_channel', { kind: 'deallocate' }, 'deallocate without channel');
  rejects(t, raw({ version: 1, allocateResponse: { channel: 0, result: 1 } }), 'bad_channel', {}, 'response on channel 0');
  rejects(t, raw({ version: 1, allocateRequest: { channel: 5, dst: { processName: 's' }, qos: {} } }), 'missing_field', { kind: 'allocate_request', channel: 5 }, 'no source name');
  rejects(t, raw({ version: 1, allocateRequest: { channel: 5, src: { processName: 'c' }, qos: {} } }), 'missing_field', { channel: 5 }, 'no destination name');
  rejects(t, raw({ version: 1, allocateRequest: { channel: 5, src: { processName: 'c' }, dst: { processName: 's' } } }), 'missing_field', { channel: 5 }, 'no QoS');
  rejects(t, raw({ version: 1, allocateRequest: { channel: 5, src: { processName: '' }, dst: { processName: 's' }, qos: {} } }), 'bad_name', { channel: 5 }, 'empty process name');
  rejects(t, raw({ version: 1, allocateRequest: { channel: 5, src: { processName: 'c' }, dst: { processName: 's/x' }, qos: {} } }), 'bad_name', {}, "'/' in a name");
  rejects(t, raw({ version: 1, allocateRequest: { channel: 5, src: { processName: 'c\u0001' }, dst: { processName: 's' }, qos: {} } }), 'bad_name', {}, 'control character');
  rejects(t, raw({ version: 1, allocateRequest: { channel: 5, src: { processName: 'c' }, dst: { processName: 's' }, qos: {}, difName: 'd'.repeat(300) } }), 'bad_value', {}, 'DIF name too long');
  rejects(t, raw({ version: 1, allocateResponse: { channel: 1 } }), 'missing_field', {}, 'response without result');
  rejects(t, raw({ version: 1, allocateResponse: { channel: 1, result: 7 } }), 'bad_value', {}, 'unknown result value');
  // Invalid UTF-8 in a name: protobufjs refuses it (were it decoded to U+FFFD, the name check would).
  const bad = Uint8Array.from([0x08, 0x01, 0x12, 0x0e, 0x08, 0x05, 0x12, 0x03, 0x0a, 0x01, 0xff, 0x1a, 0x03, 0x0a, 0x01, 0x73, 0x22, 0x00]);
  rejects(t, bad, 'undecodable', {}, 'invalid UTF-8 in a name');
});

t.test('random bytes never throw anything but ControlMessageError', async (t) => {
  let seed = 12345;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed >>> 16;
  };
  // A copy: encodeControl may return a Buffer, whose slice() is a view, and the mutations below
  // would then pile up in the one valid message instead of each starting from it.
  const valid = Uint8Array.from(encodeControl(request));
  const outcomes = { random: {} as Record<string, number>, mutated: {} as Record<string, number> };
  let other = 0;
  let notRoundTrip = 0;
  for (let i = 0; i < 3000; i++) {
    let bytes: Uint8Array;
    const kind = i % 2 === 0 ? 'random' : 'mutated';
    if (kind === 'random') {
      bytes = new Uint8Array(rnd() % 64);
      for (let j = 0; j < bytes.length; j++) bytes[j] = rnd() & 0xff;
    } else {
      // Mutations of the valid message: flipped bits and truncations.
      bytes = valid.slice(0, valid.length - (rnd() % 4));
      for (let k = 0; k < 1 + (rnd() % 3); k++) bytes[rnd() % bytes.length]! ^= 1 << (rnd() % 8);
    }
    let outcome: string;
    try {
      const m = decodeControl(bytes);
      outcome = `decoded ${m.kind}`;
      // What is accepted is a well-formed message: it encodes back to the same message.
      if (JSON.stringify(decodeControl(encodeControl(m))) !== JSON.stringify(m)) notRoundTrip++;
    } catch (e) {
      if (!(e instanceof ControlMessageError)) other++;
      outcome = e instanceof ControlMessageError ? e.reason : 'other';
    }
    outcomes[kind][outcome] = (outcomes[kind][outcome] ?? 0) + 1;
  }
  t.equal(other, 0, 'only ControlMessageErrors');
  t.equal(notRoundTrip, 0, 'every accepted input is a well-formed message');
  // The inputs are fixed (seeded), so is what becomes of each of them.
  t.same(outcomes.random, { undecodable: 1471, unsupported_version: 29 }, 'every random input is rejected');
  t.same(outcomes.mutated, { 'decoded allocate_request': 204, undecodable: 1250, unsupported_version: 9, missing_field: 36, bad_name: 1 }, 'mutations: exactly these accepted (a changed name or value still makes a request) and rejected');
});

t.test('encode refuses invalid outgoing messages', async (t) => {
  t.throws(() => encodeControl({ ...request, channel: 0 }), { name: 'ControlMessageError', reason: 'bad_channel' });
  t.throws(() => encodeControl({ kind: 'deallocate', channel: -1, reason: '', confirm: false }), { name: 'ControlMessageError', reason: 'bad_channel' });
  t.throws(() => encodeControl({ kind: 'allocate_response', channel: 2 ** 32, result: 'accept', reason: '' }), { name: 'ControlMessageError', reason: 'bad_channel' });
  t.throws(() => encodeControl({ ...request, src: { processName: '' } }), { name: 'ControlMessageError', reason: 'bad_name' });
  t.throws(() => encodeControl({ ...request, qos: { reliable: true, inOrder: true, maxSdu: 1.5 } }), { name: 'ControlMessageError', reason: 'bad_value' });
});
