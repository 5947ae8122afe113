/**
 * top/source.ts — where `vmpi top` reads from: the server's metrics endpoint (GET /metrics over
 * HTTP, the same endpoint Prometheus scrapes) and, for the flows, its IPC daemon's inspection
 * (`list_ipcps`, then `inspect_dif` per IPC process).
 *
 * Owns: bounded reads (a time limit per request, a byte budget for the metrics body, a cap on the
 * IPC processes inspected) and the typed errors: TopError with code ERR_TOP_UNREACHABLE (nothing
 * answers at the URL), ERR_TOP_HTTP (an answer that is not 200), ERR_TOP_TOO_LARGE (a body over
 * the budget), ERR_TOP_NOT_METRICS (no vmpi metrics in the answer), ERR_TOP_TIMEOUT.
 */
import { request } from 'node:http';
import { IpcClient } from '../../dif/ipc/client.js';
import { parseExposition, type Sample } from './exposition.js';
import { flowsOf, type FlowInfo } from './flows.js';
import { CodedError } from '../../sys/coded-error.js';

export type TopErrorCode = 'ERR_TOP_UNREACHABLE' | 'ERR_TOP_HTTP' | 'ERR_TOP_TOO_LARGE' | 'ERR_TOP_NOT_METRICS' | 'ERR_TOP_TIMEOUT' | 'ERR_TOP_URL' | 'ERR_TOP_CONFIG' | 'ERR_TOP_NOT_A_TERMINAL';

export class TopError extends CodedError<TopErrorCode> {
  override name = 'TopError';
}

export interface FetchOptions {
  timeoutMs?: number;
  /** Largest body accepted (default 16 MiB). */
  maxBytes?: number;
  /** Abandon the request (the live view quitting). */
  signal?: AbortSignal;
}

/** Check `url` is an http:// URL; its URL object. */
export function metricsUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TopError('ERR_TOP_URL', `--url ${url}: not a URL; expected e.g. http://127.0.0.1:19464/metrics`);
  }
  if (u.protocol !== 'http:') throw new TopError('ERR_TOP_URL', `--url ${url}: only http:// is supported (the metrics endpoint of vmpi serve)`);
  return u;
}

/** GET the exposition at `url`; its samples. */
export function fetchMetrics(url: string, o: FetchOptions = {}): Promise<Sample[]> {
  const timeoutMs = o.timeoutMs ?? 5000;
  const maxBytes = o.maxBytes ?? 16 * 2 ** 20;
  const u = metricsUrl(url);
  return new Promise<string>((resolve, reject) => {
    let done = false;
    const fail = (e: TopError): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      reject(e);
    };
    const req = request(u, { method: 'GET', agent: false, headers: { accept: 'text/plain' }, signal: o.signal }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        fail(new TopError('ERR_TOP_HTTP', `GET ${url}: HTTP ${res.statusCode ?? '?'}; is this the metrics endpoint of vmpi serve (--metrics-listen)?`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBytes) fail(new TopError('ERR_TOP_TOO_LARGE', `GET ${url}: the answer is over ${maxBytes} bytes; not a vmpi metrics endpoint?`));
        else chunks.push(c);
      });
      res.on('end', () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(Buffer.concat(chunks).toString('utf8'));
      });
      res.on('error', (e) => fail(new TopError('ERR_TOP_UNREACHABLE', `GET ${url}: ${e.message}`)));
    });
    const timer = setTimeout(() => fail(new TopError('ERR_TOP_TIMEOUT', `GET ${url}: no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (e: NodeJS.ErrnoException) =>
      fail(new TopError('ERR_TOP_UNREACHABLE', `cannot reach the vmpi metrics endpoint at ${url}: ${e.code ?? e.message}; is vmpi serve running with metrics on? (--url, or --config with the server's file)`)),
    );
    req.end();
  }).then((text) => {
    const parsed = parseExposition(text);
    if (!parsed.samples.some((s) => s.name.startsWith('vmpi_'))) {
      throw new TopError('ERR_TOP_NOT_METRICS', `GET ${url}: no vmpi_ metrics in the answer; is this the metrics endpoint of vmpi serve?`);
    }
    return parsed.samples;
  });
}

/** Reject after `ms` with a TopError naming `what`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TopError('ERR_TOP_TIMEOUT', `${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The flows of every IPC process of the daemon at `socket` (one connection, closed after). */
export async function fetchFlows(socket: string | undefined, o: { timeoutMs?: number; maxIpcps?: number } = {}): Promise<FlowInfo[]> {
  const src = new FlowSource(socket, o);
  try {
    return await src.poll();
  } finally {
    src.close();
  }
}

/**
 * The IPC daemon as the live view polls it: one session kept across polls (not one per second in
 * the daemon's session counters), connected again on the next poll once it is gone.
 */
export class FlowSource {
  private client: IpcClient | null = null;
  private closed = false;
  constructor(
    private readonly socket: string | undefined,
    private readonly o: { timeoutMs?: number; maxIpcps?: number } = {},
  ) {}

  async poll(): Promise<FlowInfo[]> {
    const timeoutMs = this.o.timeoutMs ?? 5000;
    if (this.closed) throw new TopError('ERR_TOP_UNREACHABLE', 'IPC daemon: closed');
    if (this.client?.closed) this.client = null;
    if (!this.client) {
      const c = await within(IpcClient.connect(this.socket), timeoutMs, 'IPC daemon');
      if (this.closed) {
        c.close(); // closed while connecting: keep nothing open
        throw new TopError('ERR_TOP_UNREACHABLE', 'IPC daemon: closed');
      }
      this.client = c;
    }
    const client = this.client;
    try {
      const { ipcps } = await within(client.listIpcps(), timeoutMs, 'IPC daemon list_ipcps');
      const flows: FlowInfo[] = [];
      for (const i of ipcps.slice(0, this.o.maxIpcps ?? 64)) {
        try {
          flows.push(...flowsOf(await within(client.inspectDif(i.dif), timeoutMs, `IPC daemon inspect_dif ${i.dif}`)));
        } catch (e) {
          if (client.closed || e instanceof TopError) throw e;
          // one IPC process that cannot be inspected (gone since the list) leaves the others
        }
      }
      return flows;
    } catch (e) {
      this.client?.close(); // a timeout or a lost session: start afresh next time
      this.client = null;
      throw e;
    }
  }

  /** Close the session; poll() fails from now on. */
  close(): void {
    this.closed = true;
    this.client?.close();
    this.client = null;
  }
}
