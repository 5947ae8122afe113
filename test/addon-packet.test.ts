/**
 * addon-packet.test.ts — the addon's AF_PACKET functions (packetOpen, packetSend, packetSendBatch,
 * packetRecvBatch, packetIfInfo) for the shim DIF over Ethernet, on a veth pair in a network
 * namespace this test creates (and removes): test/helpers/packet-child.ts runs inside it.
 */
import { join } from 'node:path';
import t from 'tap';
import { ROOT } from './helpers/guest.js';
import { canNetns, netns, uniqueName, veth } from './helpers/netns.js';

const skip = canNetns();
t.test('AF_PACKET in a network namespace', { skip }, async (t) => {
  const ns = netns(t);
  const a = uniqueName('pa');
  const b = uniqueName('pb');
  veth(ns, a, ns, b, 9000);
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  await t.spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', import.meta.resolve('tsx'), join(ROOT, 'test', 'helpers', 'packet-child.ts'), a, b], { env, timeout: 60_000 }, 'packet-child in its namespace');
});
