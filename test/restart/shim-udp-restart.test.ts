/**
 * shim-udp-restart.test.ts — a flow over the shim DIF over UDP survives a restart of the server
 * at one end: A runs `vmpi serve` in its default keeper mode, B with `--restart off`, both with a
 * shim-udp IPC process on loopback (test/helpers/two-serves.ts). An IPC client on A registers an
 * echo application, one on B allocates a flow to it; A's worker is killed (SIGKILL) and the
 * keeper starts a new one, which binds the same port again, resumes A's IPC session and the
 * shim-udp flow it held (same flow ids, peer, port-id): the flow carries SDUs both ways again,
 * neither client saw it end, and a new flow works. A flow held by nobody after the restart (its
 * client went away while no worker ran) ends at B with the restart reason, not by keepalive.
 * The round itself is test/helpers/shim-restart.ts (shared with shim-eth-restart.test.ts).
 */
import t from 'tap';
import { keptFlowsSurvive } from '../helpers/shim-restart.js';
import { freePort, twoServes } from '../helpers/two-serves.js';

t.test('a shim-udp flow held by an IPC session survives a restart of its server', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  // A long keepalive timeout: B must not give the flow up while A restarts (seconds under load).
  const udp = { dif: 'udp.lo', keepaliveMs: 300, keepaliveTimeoutMs: 20_000 };
  const s = await twoServes(
    t,
    'shim-udp-restart',
    { shimUdp: { ...udp, bind: `127.0.0.1:${pa}`, allow: [`127.0.0.1:${pb}`] } },
    { shimUdp: { ...udp, bind: `127.0.0.1:${pb}`, peers: { echo: `127.0.0.1:${pa}` } } },
    [{ restart: 'keeper' }, {}],
  );
  await keptFlowsSurvive(t, s, 'udp.lo', 'shim-udp');
});
