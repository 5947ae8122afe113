/**
 * The shim DIF over UDP's HOST:PORT peers (src/dif/shim-udp/resolve.ts): resolved by a tiny DNS
 * server this test runs on 127.0.0.1 (A records from a table the test changes, NXDOMAIN for
 * other names, or silence), never by an external server; and by the system resolver for
 * "localhost" (/etc/hosts). An allocation to a name resolves it, a missing name fails 'rejected'
 * with a DNS reason, a silent server fails 'timeout' within resolveTimeoutMs, and an address
 * that changed is asked again after a failed allocation (not only when the cache expires).
 */
import { createSocket, type Socket } from 'node:dgram';
import t, { type Test } from 'tap';
import { ShimUdpIpcp, type ShimUdpOptions } from '../../src/dif/shim-udp/ipcp.js';
import { parseHostPort } from '../../src/dif/shim-udp/resolve.js';
import type { UdpFlow } from '../../src/dif/shim-udp/flow.js';

interface TinyDns {
  port: number;
  /** name (lower case) → IPv4; others get NXDOMAIN. */
  records: Map<string, string>;
  silent: boolean;
  queries: string[];
}

/** A DNS server on 127.0.0.1 answering A queries from `records` (RFC 1035 wire format, one question). */
async function tinyDns(t: Test): Promise<TinyDns> {
  const sock: Socket = createSocket('udp4');
  const dns: TinyDns = { port: 0, records: new Map(), silent: false, queries: [] };
  sock.on('message', (q, r) => {
    if (q.byteLength < 12) return;
    let at = 12;
    const labels: string[] = [];
    while (at < q.byteLength && q[at] !== 0) {
      labels.push(q.subarray(at + 1, at + 1 + q[at]!).toString('ascii'));
      at += 1 + q[at]!;
    }
    const qEnd = at + 5; // the 0 byte, QTYPE, QCLASS
    const name = labels.join('.').toLowerCase();
    dns.queries.push(name);
    if (dns.silent) return;
    const ip = dns.records.get(name);
    const qtype = q.readUInt16BE(at + 1);
    const header = Buffer.alloc(12);
    q.copy(header, 0, 0, 2);
    header.writeUInt16BE(ip === undefined ? 0x8183 : 0x8180, 2); // response, RD, RA; rcode 3 NXDOMAIN
    header.writeUInt16BE(1, 4);
    const answers = ip !== undefined && qtype === 1;
    header.writeUInt16BE(answers ? 1 : 0, 6);
    const parts = [header, q.subarray(12, qEnd)];
    if (answers) {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0);
      rr.writeUInt16BE(1, 2);
      rr.writeUInt16BE(1, 4);
      rr.writeUInt32BE(1, 6); // TTL 1 s
      rr.writeUInt16BE(4, 10);
      ip.split('.').forEach((b, i) => (rr[12 + i] = Number(b)));
      parts.push(rr);
    }
    sock.send(Buffer.concat(parts), r.port, r.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  dns.port = sock.address().port;
  t.teardown(() => sock.close());
  return dns;
}

async function open(t: Test, opts: Partial<ShimUdpOptions>): Promise<ShimUdpIpcp> {
  const x = await ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', ...opts });
  t.teardown(() => x.close());
  return x;
}

t.test('HOST:PORT is told from IPv4:PORT', async (t) => {
  t.same(parseHostPort('Peer-1.Example:7300'), { host: 'peer-1.example', port: 7300 });
  for (const bad of ['1.2.3.4:7300', 'x:0', 'x:70000', '-x:1', 'a..b:1', 'x', 'a_b:1']) t.throws(() => parseHostPort(bad), Error, bad);
  await t.rejects(ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', peers: { srv: 'not a host:1' } }), { code: 'invalid_config', message: /peers\["srv"\].*neither IPv4:PORT nor HOST:PORT/ });
  await t.rejects(ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', dnsServers: ['dns.example'] }), { code: 'invalid_config', message: /dnsServers\[0\]/ });
});

t.test('a peer given by host name: resolved by DNS, errors typed, asked again after a failure', async (t) => {
  const dns = await tinyDns(t);
  const a = await open(t, {});
  a.register('srv', (r) => void r.accept());
  const port = Number(a.localAddress.split(':')[1]);
  dns.records.set('srv.test', '127.0.0.1');
  const b = await open(t, {
    peers: { srv: `srv.test:${port}`, gone: `nosuch.test:${port}` },
    dnsServers: [`127.0.0.1:${dns.port}`],
    resolveTimeoutMs: 500,
    allocateTimeoutMs: 400,
    retryMs: 100,
  });
  a.allowAddress(b.localAddress);
  const f = await b.allocateFlow('cli', 'srv');
  t.equal((f as UdpFlow).peer, `127.0.0.1:${port}`, 'the address the DNS server gave');
  t.ok(dns.queries.includes('srv.test'), 'asked our DNS server');
  t.match(b.inspect().peers, { srv: `srv.test:${port} (127.0.0.1)` });
  f.deallocate();

  await t.rejects(b.allocateFlow('cli', 'gone'), { code: 'rejected', message: /nosuch\.test.*no IPv4 address/, peerReason: 'unresolved: not_found' }, 'a name the DNS does not know');

  // The address changes: the cached one fails the allocation (nobody there), the next asks again.
  dns.records.set('srv.test', '127.0.0.2');
  const f2 = await b.allocateFlow('cli', 'srv'); // still cached: 127.0.0.1
  t.equal((f2 as UdpFlow).peer, `127.0.0.1:${port}`, 'kept while fresh');
  f2.deallocate();
  const asked = dns.queries.length;
  dns.records.set('srv.test', '127.0.0.3');
  // A new IPC process resolves 127.0.0.3 at its start (nobody listens there), then the record is fixed.
  const c = await open(t, { peers: { srv: `srv.test:${port}` }, dnsServers: [`127.0.0.1:${dns.port}`], resolveTimeoutMs: 500, allocateTimeoutMs: 300, retryMs: 100 });
  await new Promise((r) => setTimeout(r, 100)); // its start-up resolution: 127.0.0.3, where nobody listens
  await t.rejects(c.allocateFlow('cli', 'srv'), { code: 'timeout' }, 'the stale address: no answer');
  dns.records.set('srv.test', '127.0.0.1');
  a.allowAddress(c.localAddress);
  const f3 = await c.allocateFlow('cli', 'srv');
  t.equal((f3 as UdpFlow).peer, `127.0.0.1:${port}`, 'asked again after the failed allocation: the new address');
  t.ok(dns.queries.length >= asked + 2, 'a second query for it');

  // A silent DNS server: the allocation fails 'timeout' within resolveTimeoutMs.
  dns.silent = true;
  const d = await open(t, { peers: { srv: `late.test:${port}` }, dnsServers: [`127.0.0.1:${dns.port}`], resolveTimeoutMs: 300 });
  const t0 = Date.now();
  await t.rejects(d.allocateFlow('cli', 'srv'), { code: 'timeout', message: /DNS: no answer for late\.test within 300 ms/ });
  t.ok(Date.now() - t0 < 300 + 500, `bounded: ${Date.now() - t0} ms`);
});

t.test('the system resolver: localhost from /etc/hosts', async (t) => {
  const a = await open(t, {});
  a.register('srv', (r) => void r.accept());
  const port = Number(a.localAddress.split(':')[1]);
  const b = await open(t, { peers: { srv: `localhost:${port}` } });
  a.allowAddress(b.localAddress);
  const f = await b.allocateFlow('cli', 'srv');
  t.equal((f as UdpFlow).peer, `127.0.0.1:${port}`);
});
