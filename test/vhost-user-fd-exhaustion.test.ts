/**
 * vhost-user-fd-exhaustion.test.ts — a vhost-user server with no file descriptor left (issue 9,
 * item 8, the QEMU side). In a child whose RLIMIT_NOFILE is lowered with prlimit (the machine's
 * own limits are never touched): a front-end that connects while the table is full stays in the
 * backlog, accept(2) backs off instead of spinning (the old loop logged tens of thousands of
 * lines a second and starved the connections already open), QEMU's requests on an open
 * connection keep being answered, and the waiting front-end is served once fds are free.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Req } from '../src/vhost-user/protocol.js';
import { VhostUserFrontend } from './frontend/frontend.js';
import { havePrlimit, startLimitedChild } from './helpers/limited-child.js';

const CHILD = resolve(import.meta.dirname, 'helpers/vhost-fd-child.ts');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('out of fds: accept backs off, open connections are answered, waiting ones served later', { skip: havePrlimit ? false : 'prlimit (util-linux) not installed' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-vfdx-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'vm.sock');
  const { next, command, stderr, exit } = startLimitedChild(t, CHILD, [sock], 128);
  const stats = async () => (await command('stats', 'stats')).stats as { connections: number; acceptErrors: number };

  await next('ready', 60_000);
  const open = new VhostUserFrontend(sock, { timeoutMs: 5000 });
  t.teardown(() => open.close());
  t.ok(await open.request(Req.GET_FEATURES), 'an open connection is answered');
  t.equal((await command('fill', 'filled')).filled as number > 0, true, 'the child has no fd left');

  const waiting = new VhostUserFrontend(sock, { timeoutMs: 10_000 }); // connect() completes in the backlog
  t.teardown(() => waiting.close());
  await sleep(1500);
  const st = await stats();
  t.equal(exit(), null, 'the server is still running');
  t.ok(st.acceptErrors > 0 && st.acceptErrors < 100, `accept backed off: ${st.acceptErrors} failures in 1.5 s`);
  const logged = stderr().split('\n').filter((l) => /accept failed/.test(l)).length;
  t.ok(logged >= 1 && logged <= 2, `accept failures logged ${logged} time(s) of ${stderr().length} bytes`);
  t.ok(await open.request(Req.GET_FEATURES), 'QEMU on the open connection is still answered');

  await command('free', 'freed');
  t.ok(await waiting.request(Req.GET_FEATURES, undefined, { timeoutMs: 10_000 }), 'the front-end that waited in the backlog is served once fds are free');
  t.equal((await stats()).connections, 2);
});
