/**
 * Connection state serialisation (src/vhost-user/state.ts): initial values, a JSON round trip that
 * keeps 64-bit feature masks exact, independence of the copies, and the version check.
 */
import t from 'tap';
import { bit, ProtoFeature, VirtioFeature } from '../src/vhost-user/protocol.js';
import {
  initialState,
  initialVring,
  stateFromJSON,
  stateToJSON,
  type ConnectionState,
  type ConnectionStateJSON,
} from '../src/vhost-user/state.js';

function sampleState(): ConnectionState {
  const s = initialState(3);
  s.owner = true;
  s.ackedFeatures = bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.RING_EVENT_IDX) | bit(VirtioFeature.PROTOCOL_FEATURES) | (1n << 63n) | 1n;
  s.protocolFeatures = bit(ProtoFeature.MQ) | bit(ProtoFeature.REPLY_ACK) | bit(ProtoFeature.CONFIGURE_MEM_SLOTS);
  s.status = 0x0f;
  s.memory = [
    { guestPhysAddr: 0, size: 0x8000_0000, userAddr: 0x7f12_0000_0000, mmapOffset: 0 },
    { guestPhysAddr: 0x1_0000_0000, size: 0x1_8000_0000, userAddr: 0x1f_fff0_0000_0000, mmapOffset: 0x8000_0000 },
  ];
  s.memoryFds = [17, 18];
  s.vrings[0] = {
    index: 0,
    size: 256,
    addr: { descUser: 0x7f12_0001_0000, availUser: 0x7f12_0001_1000, usedUser: 0x7f12_0001_2000, logGuestAddr: 0, flags: 0 },
    lastAvailIdx: 65535,
    kickFd: 20,
    callFd: 21,
    errFd: null,
    started: true,
    enabled: true,
  };
  s.vrings[2]!.size = 1024;
  s.vrings[2]!.enabled = true;
  return s;
}

t.test('initial state', async (t) => {
  t.same(initialVring(4), { index: 4, size: 0, addr: null, lastAvailIdx: 0, kickFd: null, callFd: null, errFd: null, started: false, enabled: false });
  const s = initialState(2);
  t.same(s, {
    owner: false,
    ackedFeatures: 0n,
    protocolFeatures: 0n,
    status: 0,
    memory: [],
    memoryFds: [],
    vrings: [initialVring(0), initialVring(1)],
  });
  t.not(s.vrings[0], s.vrings[1]);
  t.same(initialState(0).vrings, []);
});

t.test('toJSON: bigints as hex strings, plain JSON', async (t) => {
  const s = sampleState();
  const j = stateToJSON(s);
  t.equal(j.version, 1);
  t.equal(j.ackedFeatures, '0x8000000160000001');
  t.equal(j.protocolFeatures, '0x8009');
  t.equal(j.status, 15);
  t.same(j.memory, s.memory);
  t.same(j.memoryFds, [17, 18]);
  t.same(j.vrings, s.vrings);
  t.equal(stateToJSON(initialState(1)).ackedFeatures, '0x0');
  // JSON.stringify must not throw on bigints: there are none left.
  const text = JSON.stringify(j);
  t.match(text, /"ackedFeatures":"0x8000000160000001"/);
  t.equal(JSON.parse(text).memory[1].userAddr, 0x1f_fff0_0000_0000, 'addresses below 2^53 survive JSON as numbers');
});

t.test('round trip through JSON text', async (t) => {
  const s = sampleState();
  const back = stateFromJSON(JSON.parse(JSON.stringify(stateToJSON(s))) as ConnectionStateJSON);
  t.same(back, s);
  t.equal(back.ackedFeatures, s.ackedFeatures);
  t.equal(typeof back.ackedFeatures, 'bigint');
  t.equal(back.protocolFeatures, 0x8009n);
  t.equal(back.vrings[0]!.lastAvailIdx, 65535);
  t.equal(back.vrings[0]!.errFd, null);
  t.equal(back.vrings[1]!.addr, null);
  t.equal(back.memory[1]!.userAddr, 0x1f_fff0_0000_0000);

  const max = initialState(1);
  max.ackedFeatures = 0xffff_ffff_ffff_ffffn;
  max.protocolFeatures = 0xffff_ffff_ffff_ffffn;
  const m = stateFromJSON(JSON.parse(JSON.stringify(stateToJSON(max))) as ConnectionStateJSON);
  t.equal(m.ackedFeatures, 0xffff_ffff_ffff_ffffn, 'all 64 bits');
  t.equal(m.protocolFeatures, 0xffff_ffff_ffff_ffffn);
});

t.test('copies are independent of their source', async (t) => {
  const s = sampleState();
  const j = stateToJSON(s);
  j.memory[0]!.size = 1;
  j.memoryFds.push(99);
  j.vrings[0]!.addr!.descUser = 1;
  j.vrings[0]!.size = 2;
  t.equal(s.memory[0]!.size, 0x8000_0000);
  t.same(s.memoryFds, [17, 18]);
  t.equal(s.vrings[0]!.addr!.descUser, 0x7f12_0001_0000);
  t.equal(s.vrings[0]!.size, 256);

  const j2 = stateToJSON(s);
  const back = stateFromJSON(j2);
  back.memory[1]!.guestPhysAddr = 5;
  back.memoryFds[0] = 0;
  back.vrings[0]!.addr!.usedUser = 7;
  back.vrings[2]!.enabled = false;
  t.equal(j2.memory[1]!.guestPhysAddr, 0x1_0000_0000);
  t.equal(j2.memoryFds[0], 17);
  t.equal(j2.vrings[0]!.addr!.usedUser, 0x7f12_0001_2000);
  t.equal(j2.vrings[2]!.enabled, true);
});

t.test('version check', async (t) => {
  const j = stateToJSON(sampleState());
  const bad = (version: unknown) => ({ ...j, version }) as unknown as ConnectionStateJSON;
  t.throws(() => stateFromJSON(bad(2)), { message: /^connection state version 2 is not supported \(expected 1\)/, code: 'state_version' });
  t.throws(() => stateFromJSON(bad(0)), { message: /^connection state version 0 is not supported \(expected 1\)/, code: 'state_version' });
  t.throws(() => stateFromJSON(bad('1')), { message: /^connection state version 1 is not supported \(expected 1\)/, code: 'state_version' }, 'the string "1" is not version 1');
  t.throws(() => stateFromJSON(bad(undefined)), { message: /^connection state version undefined is not supported \(expected 1\)/ });
  t.doesNotThrow(() => stateFromJSON(bad(1)));
});
