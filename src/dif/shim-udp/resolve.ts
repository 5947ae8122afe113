/**
 * resolve.ts — the shim DIF over UDP's peer addresses given as a host name ("HOST:PORT" in its
 * `peers` table) and their resolution by DNS (ipcp.ts uses it).
 *
 * Owns: telling "IPv4:PORT" from "HOST:PORT", and resolving a host name to one IPv4 address in
 * bounded time: node:dns `lookup` (the system's resolver: /etc/hosts, then DNS as nsswitch and
 * resolv.conf say) by default, or a Resolver asking only `servers` when they are given. A result
 * is kept `cacheMs`; a failed allocation to the address forgets it (`invalidate`), so the next
 * allocation asks again; concurrent lookups of one name share one query. Failures are
 * HostResolveError with a code: 'not_found' (the name has no IPv4 address: ENOTFOUND, ENODATA,
 * NXDOMAIN), 'timeout' (no answer within `timeoutMs`), 'failed' (any other resolver error).
 */
import { lookup, Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { CodedError } from '../../sys/coded-error.js';

/** A host name as in RFC 1123: labels of letters, digits and '-', dot-separated, up to 253 characters. */
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** "HOST:PORT" with a host name (not an IPv4 address); throws an Error completing "<text> …". */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(text);
  if (!m || isIP(m[1]!) !== 0 || !HOST_NAME.test(m[1]!)) throw new Error('is neither IPv4:PORT nor HOST:PORT (for example "127.0.0.1:7300" or "peer.example:7300")');
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new Error(`has port ${port}: use 1..65535`);
  return { host: m[1]!.toLowerCase(), port };
}

export type HostResolveErrorCode = 'not_found' | 'timeout' | 'failed';

export class HostResolveError extends CodedError<HostResolveErrorCode> {
  override name = 'HostResolveError';
}

export interface HostResolverOptions {
  /** DNS servers ("IPv4" or "IPv4:PORT") asked instead of the system's resolver. */
  servers?: string[];
  /** Most time one resolution may take (default 2000 ms). */
  timeoutMs?: number;
  /** How long a result is kept (default 60000 ms). */
  cacheMs?: number;
}

export const DEFAULT_RESOLVE_TIMEOUT_MS = 2000;
export const DEFAULT_RESOLVE_CACHE_MS = 60_000;

const NOT_FOUND = new Set(['ENOTFOUND', 'ENODATA', 'NXDOMAIN', 'ENONAME']);

export class HostResolver {
  readonly timeoutMs: number;
  readonly cacheMs: number;
  private readonly resolver: Resolver | null;
  private readonly cache = new Map<string, { ip: string; expires: number }>();
  private readonly inflight = new Map<string, Promise<string>>();
  /** Queries made (cache misses) and failed. */
  lookups = 0;
  failures = 0;

  constructor(opts: HostResolverOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_RESOLVE_TIMEOUT_MS;
    this.cacheMs = opts.cacheMs ?? DEFAULT_RESOLVE_CACHE_MS;
    if (opts.servers && opts.servers.length > 0) {
      // One try, the whole bound for it: the race below is the bound that counts.
      this.resolver = new Resolver({ timeout: this.timeoutMs, tries: 1 });
      this.resolver.setServers(opts.servers);
    } else this.resolver = null;
  }

  /** The address `host` had at its last resolution, if still kept. */
  cached(host: string): string | undefined {
    const c = this.cache.get(host);
    return c && c.expires > Date.now() ? c.ip : undefined;
  }

  /** Forget `host`'s address (an allocation to it failed): the next resolve() asks again. */
  invalidate(host: string): void {
    this.cache.delete(host);
  }

  /** One IPv4 address of `host`, from the cache or asked now (bounded). Throws HostResolveError. */
  resolve(host: string): Promise<string> {
    const c = this.cached(host);
    if (c !== undefined) return Promise.resolve(c);
    let p = this.inflight.get(host);
    if (!p) {
      p = this.query(host).finally(() => this.inflight.delete(host));
      this.inflight.set(host, p);
    }
    return p;
  }

  private async query(host: string): Promise<string> {
    this.lookups++;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HostResolveError('timeout', `DNS: no answer for ${host} within ${this.timeoutMs} ms${this.resolver ? ` from ${this.resolver.getServers().join(', ')}` : ''}: check the DNS servers, or give the peer as IPv4:PORT`)), this.timeoutMs);
      timer.unref();
    });
    const ask = this.resolver ? this.resolver.resolve4(host).then((a) => a[0]) : lookup(host, { family: 4 }).then((a) => a.address);
    ask.catch(() => undefined); // settled after the bound: not an unhandled rejection
    try {
      const ip = await Promise.race([ask, bound]);
      if (ip === undefined) throw new HostResolveError('not_found', `DNS: ${host} has no IPv4 address`);
      this.cache.set(host, { ip, expires: Date.now() + this.cacheMs });
      return ip;
    } catch (e) {
      this.failures++;
      if (e instanceof HostResolveError) throw e;
      const code = (e as NodeJS.ErrnoException).code ?? '';
      if (NOT_FOUND.has(code)) throw new HostResolveError('not_found', `DNS: ${host} has no IPv4 address (${code}): check the name in the peers table`, { cause: e });
      if (code === 'ETIMEOUT') throw new HostResolveError('timeout', `DNS: no answer for ${host} within ${this.timeoutMs} ms (${code})`, { cause: e });
      throw new HostResolveError('failed', `DNS: resolving ${host} failed (${code || (e as Error).message})`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }
}
