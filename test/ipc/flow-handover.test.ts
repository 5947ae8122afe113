/**
 * flow-handover.test.ts — the daemon's handover of a flow's data path (src/dif/ipc/flow-handover.ts)
 * where it fails: a resumed ring flow whose bridge cannot be made gives back everything it took
 * (the ring's mapping, its memfd, the flow's fd, and the daemon's ring memory accounting: a
 * leak there would refuse rings to later flows once the cap is reached); a resumed ring keeps the
 * size its memfd was made with (an older daemon's rings were 1 MiB per direction).
 */
import t from 'tap';
import { EventEmitter } from 'node:events';
import { fstatSync } from 'node:fs';
import type { Flow } from '../../src/dif/api.js';
import { resumeFlowLink } from '../../src/dif/ipc/flow-handover.js';
import type { IpcDaemonStats } from '../../src/dif/ipc/daemon-limits.js';
import { createRing, HEADER_BYTES, RING_MAGIC, RING_SEALS, RING_VERSION, ringBytesFor, ringFileBytes } from '../../src/dif/ipc/ring.js';
import { FlowBridge } from '../../src/dif/ipc/bridge.js';
import { safeClose } from '../../src/sys/fd.js';
import { native } from '../../src/sys/native.js';
import { logger } from '../../src/sys/log.js';

function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

t.test('a resumed ring flow whose bridge fails: its ring, fds and ring accounting are all given back', (t) => {
  const maxSdu = 4000;
  const { fd: ringFd, map } = createRing(maxSdu);
  map.unmap(); // the successor maps it again itself
  // The flow's socket fd is already closed: watching it fails (EBADF), after the ring was mapped and counted.
  const [a, b] = native.socketpairSeqpacket();
  native.close(a);
  native.close(b);
  const flow = { portId: 1, qos: { maxSdu, reliable: false, inOrder: false }, state: 'allocated' } as unknown as Flow;
  const stats = { ringBytes: 0, ringFlows: 0 } as IpcDaemonStats;
  const hooks = { onFlowEnd: () => {}, onClosed: () => {} };
  t.throws(() => resumeFlowLink(flow, a, hooks, logger, ringFd, stats), /EBADF/);
  t.equal(stats.ringBytes, 0, "the ring's memory is no longer counted");
  t.equal(stats.ringFlows, 0, 'nor the ring flow');
  t.notOk(isOpen(ringFd), "the ring's memfd is closed");
  t.end();
});

t.test('a resumed ring keeps the size of its memfd, not what ringBytesFor says now', (t) => {
  const maxSdu = 4000;
  const dataBytes = 1 << 20;
  t.not(ringBytesFor(maxSdu), dataBytes, 'this process would make another size');
  // A ring as an older daemon made it: 1 MiB per direction, sealed, its header written.
  const ringFd = native.memfdCreateSealed('old-ring', ringFileBytes(dataBytes), RING_SEALS);
  const buf = native.mmap(ringFd, 0, ringFileBytes(dataBytes));
  const u = new Uint32Array(buf);
  u[0] = RING_MAGIC;
  u[1] = RING_VERSION;
  u[2] = dataBytes;
  u[3] = maxSdu;
  native.munmap(buf);
  t.equal(HEADER_BYTES + 2 * dataBytes, ringFileBytes(dataBytes));
  const [mine, theirs] = native.socketpairSeqpacket();
  const flow = Object.assign(new EventEmitter(), { portId: 1, qos: { maxSdu, reliable: false, inOrder: false }, state: 'allocated', deallocate: () => {} }) as unknown as Flow;
  const stats = { ringBytes: 0, ringFlows: 0 } as IpcDaemonStats;
  const link = resumeFlowLink(flow, mine, { onFlowEnd: () => {}, onClosed: () => {} }, logger, ringFd, stats);
  t.ok(link instanceof FlowBridge, 'resumed on its ring');
  t.equal(stats.ringBytes, ringFileBytes(dataBytes), 'counted at its own size');
  link.destroy('test over');
  t.equal(stats.ringBytes, 0, 'and given back');
  safeClose(theirs);
  t.end();
});
