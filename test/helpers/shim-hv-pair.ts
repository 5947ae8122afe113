/**
 * shim-hv-pair.ts — a host and a guest shim-hv IPC process over two given VMPI ports (closed at
 * teardown), with one flow between them: the guest's 'src/1' allocates to the host's 'sink',
 * which accepts.
 */
import type { Test } from 'tap';
import { ShimHvIpcp, type ShimHvFlow, type ShimHvIpcpOptions } from '../../src/dif/shim-hv/ipcp.js';
import type { FlowImpl } from '../../src/dif/shim-hv/flow.js';
import { until } from '../dif/helpers.js';

export interface ShimHvSinkPair {
  host: ShimHvIpcp;
  guest: ShimHvIpcp;
  /** The host's end (accepted by 'sink') and the guest's (allocated by 'src/1'). */
  hostFlow: FlowImpl;
  guestFlow: ShimHvFlow;
}

export async function shimHvSinkPair(t: Test, hostPort: ShimHvIpcpOptions['port'], guestPort: ShimHvIpcpOptions['port']): Promise<ShimHvSinkPair> {
  const host = new ShimHvIpcp({ port: hostPort, role: 'host' });
  const guest = new ShimHvIpcp({ port: guestPort, role: 'guest' });
  t.teardown(() => {
    host.close();
    guest.close();
  });
  const accepted: FlowImpl[] = [];
  host.register('sink', (req) => void accepted.push(req.accept() as FlowImpl));
  const guestFlow = await guest.allocateFlow('src/1', 'sink');
  await until(() => accepted.length === 1, 'the host accepted');
  return { host, guest, hostFlow: accepted[0]!, guestFlow };
}
