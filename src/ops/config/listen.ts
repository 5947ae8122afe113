/**
 * config/listen.ts — the metrics endpoint address: parse `HOST:PORT` / `:PORT`, print it back.
 */
import { isIP } from 'node:net';
import type { ListenAddress } from './types.js';

/**
 * Parse `HOST:PORT` (IPv4 literal, `[IPv6]`, or `localhost`; port 0..65535, 0 = any free port),
 * or `:PORT` for every address of the host (IPv6 and IPv4, as Prometheus exporters read it).
 * Throws an Error whose message completes "<value> …".
 */
export function parseListenAddress(text: string): ListenAddress {
  const any = /^:(\d{1,5})$/.exec(text);
  if (any) {
    const port = Number(any[1]);
    if (port > 65535) throw new Error(`has port ${port}, above the maximum 65535`);
    return { host: '::', port };
  }
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) throw new Error('is not HOST:PORT or :PORT (for example "127.0.0.1:19464", "[::1]:19464" or ":19464")');
  const host = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`has port ${port}, above the maximum 65535`);
  if (m[1] !== undefined && isIP(host) !== 6) throw new Error(`has "${host}" in brackets, which is not an IPv6 address`);
  if (m[2] !== undefined && isIP(host) !== 4 && host !== 'localhost') throw new Error(`has host "${host}": use an IPv4 address, [IPv6] or localhost`);
  return { host, port };
}

export function formatListenAddress(a: ListenAddress): string {
  return isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
