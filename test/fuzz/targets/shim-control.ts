/**
 * shim-control.ts — fuzz targets for the shim DIF's control protocol (src/dif/shim-hv/control.ts)
 * and the IPC process that receives it (src/dif/shim-hv/ipcp.ts).
 *
 * `shim-control`: one control SDU (raw bytes, or a protobuf ControlMessage with arbitrary field
 * values, then byte mutations) → decodeControl. Only ControlMessageError may escape; an accepted
 * message must re-encode with the checks on and decode back to itself.
 *
 * `shim-ipcp`: a hostile peer. A sequence of control SDUs (as above), data SDUs and local actions
 * (allocate, accept, reject, deallocate, unregister, port down/up) is played against a real
 * ShimHvIpcp over a synchronous in-memory port. Nothing may throw out of the port's receive
 * handler (on a real device that would close the VM's vhost-user connection), everything the
 * IPC process sends on channel 0 must decode, its promises settle with DifErrors only, and
 * closing it releases every channel.
 */
import { EventEmitter } from 'node:events';
import fc from 'fast-check';
import { DifError } from '../../../src/dif/api.js';
import { ControlMessageError, controlMessageType, decodeControl, encodeControl, type ControlMessage } from '../../../src/dif/shim-hv/control.js';
import { ShimHvIpcp, type ShimHvFlow, type ShimHvFlowRequest } from '../../../src/dif/shim-hv/ipcp.js';
import { SendResult, type SduHandler } from '../../../src/vmpi/device.js';
import type { VmpiPort, VmpiPortEvents } from '../../../src/vmpi/port.js';
import { InvariantError, type FuzzTarget } from '../runner.js';
import { hex, mutate, mutation } from './util.js';

// ---------------------------------------------------------------------------------------------
// Control SDUs

const channel = fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: 8 }) }, { weight: 1, arbitrary: fc.constantFrom(1023, 1024, 0x7fffffff, 0xffffffff) }, { weight: 1, arbitrary: fc.nat() });
const component = fc.oneof(fc.constantFrom('', 'server', 'client', 'a/b', '\u0000', 'x'.repeat(300), '\ud800', 'é'), fc.string({ maxLength: 12 }));
const appName = fc.option(fc.record({ processName: component, processInstance: component, entityName: component, entityInstance: component }, { requiredKeys: [] }), { nil: undefined });
const reason = fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('x'.repeat(300), `${'y'.repeat(255)}😀`));
const u32 = fc.oneof(fc.constantFrom(0, 1, 2, 3, 65536, 0xffffffff), fc.nat());

/** A ControlMessage object for protobufjs' fromObject: every field may be off. */
const controlObject = fc.record(
  {
    version: fc.oneof({ weight: 6, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: u32 }),
    body: fc.oneof(
      fc.record(
        { allocateRequest: fc.record({ channel, src: appName, dst: appName, qos: fc.option(fc.record({ reliable: fc.boolean(), inOrder: fc.boolean(), maxSdu: u32 }, { requiredKeys: [] }), { nil: undefined }), difName: fc.oneof(fc.constantFrom('', 'hv.vmpi-7', 'x'.repeat(256)), fc.string({ maxLength: 10 })) }, { requiredKeys: [] }) },
      ),
      fc.record({ allocateResponse: fc.record({ channel, result: fc.oneof(fc.constantFrom(0, 1, 2, 3), u32), reason }, { requiredKeys: [] }) }),
      fc.record({ deallocate: fc.record({ channel, reason, confirm: fc.boolean() }, { requiredKeys: [] }) }),
      fc.constant({}),
    ),
  },
  { requiredKeys: ['body'] },
);

/** Valid-looking control SDUs aimed at the IPC process's state machine. */
const wellFormed: fc.Arbitrary<ControlMessage> = fc.oneof(
  fc.record({ kind: fc.constant('allocate_request' as const), channel, src: fc.constant({ processName: 'client' }), dst: fc.constantFrom({ processName: 'server' }, { processName: 'nobody' }, { processName: 'slow' }), qos: fc.record({ reliable: fc.boolean(), inOrder: fc.boolean(), maxSdu: fc.constantFrom(0, 100, 65536, 65537) }), difName: fc.constantFrom('', 'hv.vmpi-7', 'other') }),
  fc.record({ kind: fc.constant('allocate_response' as const), channel, result: fc.constantFrom('accept' as const, 'reject' as const), reason }),
  fc.record({ kind: fc.constant('deallocate' as const), channel, reason, confirm: fc.boolean() }),
);

function encodeObject(o: Record<string, unknown>): Uint8Array {
  const T = controlMessageType();
  const { body, ...rest } = o as { body: Record<string, unknown> };
  return T.encode(T.fromObject({ ...rest, ...body })).finish();
}

export const controlSdu: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) },
  { weight: 4, arbitrary: controlObject.map(encodeObject) },
  { weight: 3, arbitrary: wellFormed.map((m) => encodeControl(m, { unchecked: true })) },
  { weight: 2, arbitrary: fc.tuple(fc.oneof(controlObject.map(encodeObject), wellFormed.map((m) => encodeControl(m, { unchecked: true }))), fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([b, ms]) => mutate(b, ms)) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 4090, maxLength: 4200 }) },
);

function checkDecoded(m: ControlMessage): void {
  if (!Number.isInteger(m.channel) || m.channel < 1 || m.channel > 0xffffffff) throw new InvariantError(`decoded channel ${m.channel}`);
  if (m.kind !== 'allocate_request' && m.reason.length > 256) throw new InvariantError(`reason of ${m.reason.length} characters`);
  let again: ControlMessage;
  try {
    again = decodeControl(encodeControl(m));
  } catch (e) {
    throw new InvariantError(`a decoded message does not re-encode: ${(e as Error).message}`);
  }
  if (JSON.stringify(again) !== JSON.stringify(m)) throw new InvariantError(`re-encoding changed the message: ${JSON.stringify(m)} → ${JSON.stringify(again)}`);
}

export const shimControlTarget: FuzzTarget<Uint8Array> = {
  name: 'shim-control',
  description: 'one control SDU (raw / protobuf with arbitrary fields / mutated) → decodeControl',
  arbitrary: controlSdu,
  expected: (e) => e instanceof ControlMessageError,
  show: hex,
  run(sdu) {
    checkDecoded(decodeControl(sdu));
  },
};

// ---------------------------------------------------------------------------------------------
// The IPC process under a hostile peer

/** A VmpiPort whose peer is the fuzz case: deliveries are synchronous calls into the handlers. */
class SyncPort extends EventEmitter<VmpiPortEvents> implements VmpiPort {
  readonly vmpiId = 7;
  readonly maxSdu = 65536;
  isUp = true;
  readonly handlers = new Map<number, SduHandler>();
  readonly sent: { channel: number; sdu: Uint8Array }[] = [];
  full = false;

  bind(ch: number, handler: SduHandler): void {
    if (!Number.isInteger(ch) || ch < 0 || ch > 0xffffffff) throw new Error(`bad channel ${ch}`);
    this.handlers.set(ch, handler);
  }
  unbind(ch: number): void {
    this.handlers.delete(ch);
  }
  send(ch: number, sdu: Uint8Array): SendResult {
    if (!this.isUp) throw new Error('port is down');
    if (sdu.byteLength > this.maxSdu) throw new Error(`SDU of ${sdu.byteLength} bytes exceeds ${this.maxSdu}`);
    if (this.full) return SendResult.Full;
    this.sent.push({ channel: ch, sdu: Uint8Array.prototype.slice.call(sdu) });
    return SendResult.Sent;
  }
  deliver(ch: number, sdu: Uint8Array): void {
    this.handlers.get(ch)?.(sdu, ch);
  }
  setUp(up: boolean): void {
    if (this.isUp === up) return;
    this.isUp = up;
    if (up) this.emit('up');
    else this.emit('down', 'fuzz: link down');
  }
}

export type PeerStep =
  | { kind: 'control'; sdu: Uint8Array }
  | { kind: 'data'; channel: number; sdu: Uint8Array }
  /** A well-behaved peer: ask 'server' for a flow on its k-th own channel. */
  | { kind: 'open'; k: number; policyOverride: boolean }
  /** Answer the last allocate request the IPC process sent (on its channel). */
  | { kind: 'answer'; accept: boolean }
  /** Deallocate the peer's k-th channel, or confirm. */
  | { kind: 'close'; k: number; confirm: boolean }
  | { kind: 'allocate'; dst: string; timeoutMs: number }
  | { kind: 'decide'; accept: boolean }
  | { kind: 'deallocate'; index: number }
  | { kind: 'unregister' }
  | { kind: 'full'; full: boolean }
  | { kind: 'link'; up: boolean };

export interface IpcpCase {
  role: 'host' | 'guest';
  /** How the 'server' application answers requests: accept, reject, throw, or leave them waiting. */
  policy: 'accept' | 'reject' | 'throw' | 'wait';
  steps: PeerStep[];
}

const step: fc.Arbitrary<PeerStep> = fc.oneof(
  { weight: 8, arbitrary: controlSdu.map((sdu) => ({ kind: 'control' as const, sdu })) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('data' as const), channel: fc.integer({ min: 0, max: 8 }), sdu: fc.uint8Array({ maxLength: 16 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('open' as const), k: fc.nat({ max: 3 }), policyOverride: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('answer' as const), accept: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('close' as const), k: fc.nat({ max: 3 }), confirm: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('allocate' as const), dst: fc.constantFrom('peer-app', 'x'), timeoutMs: fc.integer({ min: 1, max: 50 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('decide' as const), accept: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('deallocate' as const), index: fc.nat({ max: 7 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'unregister' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('full' as const), full: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('link' as const), up: fc.boolean() }) },
);

const ipcpCase: fc.Arbitrary<IpcpCase> = fc.record({
  role: fc.constantFrom('host' as const, 'guest' as const),
  policy: fc.constantFrom('accept' as const, 'reject' as const, 'throw' as const, 'wait' as const),
  steps: fc.array(step, { minLength: 1, maxLength: 24 }),
});

/** Cases in which each thing happened at least once. */
const ipcpOutcomes = new Map<string, number>();

async function runIpcpCase(c: IpcpCase): Promise<void> {
  const port = new SyncPort();
  const ipcp = new ShimHvIpcp({ port, role: c.role, maxChannel: 8, allocateTimeoutMs: 20, deallocateTimeoutMs: 20, rxQueueLimit: 4 });
  const waiting: ShimHvFlowRequest[] = [];
  const flows: ShimHvFlow[] = [];
  const settled: Promise<unknown>[] = [];
  const bad: string[] = [];
  const expectDifError = (p: Promise<unknown>, what: string): void => {
    settled.push(
      p.then(
        (f) => flows.push(f as ShimHvFlow),
        (e: unknown) => {
          if (!(e instanceof DifError)) bad.push(`${what} rejected with ${String(e)}`);
        },
      ),
    );
  };
  const reg = ipcp.register('server', (req) => {
    switch (c.policy) {
      case 'accept':
        flows.push(req.accept());
        return;
      case 'reject':
        req.reject('fuzz says no');
        return;
      case 'throw':
        throw new Error('application bug');
      case 'wait':
        waiting.push(req);
        return;
    }
  });
  ipcp.register('slow', (req) => waiting.push(req));
  /** The peer's own channels: the guest's odd ones when the IPC process is the host, else even. */
  const peerChannel = (k: number): number => (c.role === 'host' ? 2 * k + 1 : 2 * k + 2);
  const decodesAs = (sdu: Uint8Array, kind: ControlMessage['kind']): boolean => {
    try {
      return decodeControl(sdu).kind === kind;
    } catch {
      return false;
    }
  };
  /** Peer → ipcp: nothing may come back out of the receive handler. */
  const deliver = (ch: number, sdu: Uint8Array): void => {
    try {
      port.deliver(ch, sdu);
    } catch (e) {
      throw new InvariantError(`the IPC process threw out of its channel ${ch} receive handler: ${(e as Error)?.stack ?? String(e)}`);
    }
  };
  /** A local API call may throw only a DifError. */
  const local = (what: string, fn: () => void): void => {
    try {
      fn();
    } catch (e) {
      if (!(e instanceof DifError)) throw new InvariantError(`${what} threw ${(e as Error)?.stack ?? String(e)}`);
    }
  };
  try {
    for (const s of c.steps) {
      switch (s.kind) {
        case 'control':
          deliver(0, s.sdu);
          break;
        case 'data':
          deliver(s.channel, s.sdu);
          break;
        case 'open':
          deliver(0, encodeControl({ kind: 'allocate_request', channel: peerChannel(s.k), src: { processName: 'client' }, dst: { processName: s.policyOverride ? 'slow' : 'server' }, qos: { reliable: true, inOrder: true, maxSdu: 0 }, difName: '' }));
          break;
        case 'answer': {
          const req = [...port.sent].reverse().find((x) => x.channel === 0 && decodesAs(x.sdu, 'allocate_request'));
          if (req) deliver(0, encodeControl({ kind: 'allocate_response', channel: decodeControl(req.sdu).channel, result: s.accept ? 'accept' : 'reject', reason: 'peer says' }));
          break;
        }
        case 'close':
          deliver(0, encodeControl({ kind: 'deallocate', channel: peerChannel(s.k), reason: 'peer closes', confirm: s.confirm }));
          break;
        case 'allocate':
          local('allocateFlow', () => expectDifError(ipcp.allocateFlow('client', s.dst, {}, { timeoutMs: s.timeoutMs }), 'allocateFlow'));
          break;
        case 'decide': {
          const req = waiting.shift();
          if (req) local('accept/reject', () => (s.accept ? flows.push(req.accept()) : req.reject('later no')));
          break;
        }
        case 'deallocate': {
          const f = flows[s.index % Math.max(1, flows.length)];
          if (f) local('deallocate', () => f.deallocate('fuzz'));
          break;
        }
        case 'unregister':
          local('unregister', () => reg.unregister());
          break;
        case 'full':
          port.full = s.full;
          if (!s.full) port.emit('drain');
          break;
        case 'link':
          port.setUp(s.up);
          break;
      }
    }
    // Let timers of the short allocation timeouts fire sometimes, and the flows' promises run.
    await new Promise((resolve) => setImmediate(resolve));
    const st = ipcp.stats;
    for (const [k, n] of [
      ['requests in', st.incomingRequests],
      ['accepted in', st.incomingAccepted],
      ['allocated out', st.allocSucceeded],
      ['rejected by peer', st.allocRejectedByPeer],
      ['timed out', st.allocTimedOut],
      ['deallocated', st.flowsDeallocated],
      ['unknown flow', st.unknownFlow],
      ['malformed', Object.values(st.malformed).reduce((a, b) => a + b, 0)],
    ] as const) {
      if (n > 0) ipcpOutcomes.set(k, (ipcpOutcomes.get(k) ?? 0) + 1);
    }
  } finally {
    ipcp.close();
  }
  await Promise.all(settled);
  if (bad.length) throw new InvariantError(bad.join('; '));
  for (const { channel: ch, sdu } of port.sent) {
    if (ch !== 0) continue;
    try {
      decodeControl(sdu);
    } catch (e) {
      throw new InvariantError(`the IPC process sent a control SDU that does not decode: ${(e as Error).message} (${hex(sdu)})`);
    }
  }
  const left = [...port.handlers.keys()];
  if (left.length) throw new InvariantError(`channels still bound after close: ${left.join(', ')}`);
}

export const shimIpcpTarget: FuzzTarget<IpcpCase> = {
  name: 'shim-ipcp',
  description: 'hostile peer: control/data SDUs + local actions → ShimHvIpcp over a synchronous port',
  arbitrary: ipcpCase,
  // Nothing is expected to escape: the IPC process answers or drops bad input itself.
  expected: () => false,
  show: (c) => JSON.stringify({ ...c, steps: c.steps.map((s) => ('sdu' in s ? { ...s, sdu: hex(s.sdu) } : s)) }),
  run: runIpcpCase,
  outcomes: () => Object.fromEntries(ipcpOutcomes),
};
