/**
 * guest-metrics-fetch.ts — the host's side of the guests' metrics: at scrape time, `vmpi serve`
 * allocates a flow in the device's shim DIF to the guest's `vmpi-metrics` application, sends
 * one request, reads the reply (metrics-wire.ts) and deallocates; and the HTTP paths that
 * expose it on the host's metrics endpoint:
 *   GET /metrics/guest/<vmpi-id>  the guest's exposition, verbatim (one scrape target per guest)
 *   GET /sd/guests                Prometheus http_sd_configs: one target per configured device
 *
 * Why a target per guest and not one merged /metrics: each guest gets its own `up`,
 * `scrape_duration_seconds` and staleness, a guest that does not answer fails only its own
 * scrape (the host's /metrics never waits for a guest), and the guest's series keep their own
 * names without the host rewriting them. The discovery document labels each target
 * `vmpi_guest_id` (not `vmpi_id`, which the guest's own series carry per device: the same
 * label on the target would rename them to exported_vmpi_id, or need honor_labels, which would
 * let a guest override its target's labels).
 *
 * Bounds: a fetch takes at most `timeoutMs` (allocation included) and then answers 504; a reply
 * over `maxBytes`, malformed, cut short or not UTF-8 answers 502; an unknown VMPI-id 404. Each
 * outcome is counted per configured VMPI-id (vmpi_guest_scrapes_total: ids come from the config,
 * so requests for made-up ids add no series). Concurrent requests for one guest share one fetch,
 * so a flood of HTTP requests makes one flow per guest at a time.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { DifError, type Flow, type IpcProcess } from '../dif/api.js';
import { logger as rootLogger, type Logger } from '../sys/log.js';
import { MAX_REPLY_BYTES, METRICS_APP, METRICS_CLIENT_APP, MetricsWireError, ReplyAssembler, encodeRequest } from './metrics-wire.js';
import type { GuestScrapeCounts } from './metrics.js';
import { CodedError } from '../sys/coded-error.js';

export const DEFAULT_GUEST_TIMEOUT_MS = 3000;
export const DEFAULT_GUEST_MAX_BYTES = 1024 * 1024;

export type GuestFetchErrorCode = 'unknown_guest' | 'timeout' | 'unreachable' | 'malformed' | 'oversize' | 'truncated' | 'guest_error';
export const GUEST_SCRAPE_OUTCOMES = ['ok', 'timeout', 'unreachable', 'malformed', 'oversize', 'truncated', 'guest_error'] as const;
type Outcome = (typeof GUEST_SCRAPE_OUTCOMES)[number];

export class GuestFetchError extends CodedError<GuestFetchErrorCode> {
  override name = 'GuestFetchError';

  /** The HTTP status this error answers with. */
  get httpStatus(): number {
    return this.code === 'unknown_guest' ? 404 : this.code === 'timeout' ? 504 : 502;
  }
}

export interface GuestFetcherOptions {
  /** The shim DIF IPC processes of the devices (address = VMPI-id), looked up at each fetch. */
  ipcps: () => Iterable<IpcProcess>;
  timeoutMs?: number;
  maxBytes?: number;
  logger?: Logger;
}

export class GuestMetricsFetcher implements GuestScrapeCounts {
  readonly timeoutMs: number;
  readonly maxBytes: number;
  private readonly outcomes = new Map<number, Record<Outcome, number>>();
  private readonly inflight = new Map<number, Promise<string>>();
  private readonly aborts = new Set<AbortController>();
  private readonly log: Logger;
  private closed = false;

  constructor(private readonly opts: GuestFetcherOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_GUEST_TIMEOUT_MS;
    this.maxBytes = Math.min(opts.maxBytes ?? DEFAULT_GUEST_MAX_BYTES, MAX_REPLY_BYTES);
    this.log = (opts.logger ?? rootLogger).child({ component: 'guest-metrics' });
  }

  /** The configured guests: the VMPI-ids of the devices' shim DIFs. */
  guests(): number[] {
    return [...this.opts.ipcps()].map((i) => i.address).sort((a, b) => a - b);
  }

  *counts(): Iterable<[number, Record<string, number>]> {
    const live = new Set(this.guests());
    for (const [id, c] of this.outcomes) if (live.has(id)) yield [id, c];
  }

  /** Stop: fetches in flight end as timeouts. */
  close(): void {
    this.closed = true;
    for (const a of this.aborts) a.abort();
  }

  /** The guest's exposition text. Rejects with a GuestFetchError. */
  fetch(vmpiId: number): Promise<string> {
    const ipcp = [...this.opts.ipcps()].find((i) => i.address === vmpiId);
    if (!ipcp || this.closed) return Promise.reject(new GuestFetchError('unknown_guest', `no VMPI device with VMPI-id ${vmpiId} on this host (configured: ${this.guests().join(', ') || 'none'})`));
    let p = this.inflight.get(vmpiId);
    if (!p) {
      p = this.fetchFrom(ipcp).then(
        (text) => {
          this.count(vmpiId, 'ok');
          return text;
        },
        (e: unknown) => {
          const err = e instanceof GuestFetchError ? e : new GuestFetchError('unreachable', `fetching the metrics of guest ${vmpiId}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
          this.count(vmpiId, err.code as Outcome);
          throw err;
        },
      );
      const done = p.finally(() => this.inflight.delete(vmpiId));
      done.catch(() => {});
      this.inflight.set(vmpiId, p);
    }
    return p;
  }

  private count(vmpiId: number, o: Outcome): void {
    let c = this.outcomes.get(vmpiId);
    if (!c) {
      c = Object.fromEntries(GUEST_SCRAPE_OUTCOMES.map((k) => [k, 0])) as Record<Outcome, number>;
      this.outcomes.set(vmpiId, c);
    }
    c[o]++;
  }

  private async fetchFrom(ipcp: IpcProcess): Promise<string> {
    const id = ipcp.address;
    const ac = new AbortController();
    this.aborts.add(ac);
    const timeout = (): GuestFetchError => new GuestFetchError('timeout', `guest ${id} did not answer its metrics request within ${this.timeoutMs} ms (metrics.guestTimeoutMs)`);
    const timer = setTimeout(() => ac.abort(), this.timeoutMs);
    let flow: Flow | undefined;
    try {
      try {
        flow = await ipcp.allocateFlow(METRICS_CLIENT_APP, METRICS_APP, {}, { timeoutMs: this.timeoutMs, signal: ac.signal });
      } catch (e) {
        if (e instanceof DifError && (e.code === 'aborted' || e.code === 'timeout')) throw timeout();
        const why = e instanceof DifError && e.code === 'rejected' ? `the guest refused: ${e.peerReason ?? e.message}` : (e as Error).message;
        throw new GuestFetchError('unreachable', `guest ${id}: no metrics flow to ${METRICS_APP}: ${why}`, { cause: e });
      }
      if (ac.signal.aborted) throw timeout();
      const f = flow;
      const asm = new ReplyAssembler(this.maxBytes);
      const reply = await new Promise<{ status: 'ok' | 'error'; body: Uint8Array }>((resolve, reject) => {
        const fail = (e: unknown): void => {
          reject(e instanceof MetricsWireError ? new GuestFetchError(e.code, `guest ${id}: ${e.message}`, { cause: e }) : e);
        };
        ac.signal.addEventListener('abort', () => reject(timeout()), { once: true });
        f.on('data', (sdu) => {
          try {
            if (asm.push(sdu)) resolve(asm.finish());
          } catch (e) {
            fail(e);
          }
        });
        f.once('deallocated', () => {
          try {
            resolve(asm.finish());
          } catch (e) {
            fail(e);
          }
        });
        if (!f.write(encodeRequest(this.maxBytes))) fail(new GuestFetchError('unreachable', `guest ${id}: the device is full, the metrics request was not sent`));
      });
      let text: string;
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(reply.body);
      } catch (e) {
        throw new GuestFetchError('malformed', `guest ${id}: the reply is not UTF-8 text`, { cause: e });
      }
      if (reply.status === 'error') throw new GuestFetchError('guest_error', `guest ${id} could not answer: ${text.slice(0, 500)}`);
      return text;
    } finally {
      clearTimeout(timer);
      this.aborts.delete(ac);
      flow?.removeAllListeners('data');
      flow?.deallocate('metrics fetched');
    }
  }

  /** metrics-http.ts routes: /metrics/guest/<vmpi-id> and /sd/guests. */
  readonly routes = async (path: string, req: IncomingMessage, res: ServerResponse): Promise<boolean> => {
    if (path === '/sd/guests') {
      const host = sdHost(req);
      const doc = this.guests().map((id) => ({ targets: [host], labels: { __metrics_path__: `/metrics/guest/${id}`, vmpi_guest_id: String(id) } }));
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify(doc));
      return true;
    }
    const m = /^\/metrics\/guest\/(\d{1,5})$/.exec(path);
    if (!m) return false;
    try {
      const text = await this.fetch(Number(m[1]));
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : text);
    } catch (e) {
      const err = e instanceof GuestFetchError ? e : new GuestFetchError('unreachable', (e as Error)?.message ?? String(e));
      if (err.code !== 'unknown_guest') this.log.debug({ code: err.code, err: err.message }, 'guest metrics fetch failed');
      res.writeHead(err.httpStatus, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
      res.end(`${err.code}: ${err.message}\n`);
    }
    return true;
  };
}

/** The address Prometheus used to reach us (the Host header when it is a plain host:port), for the SD targets. */
function sdHost(req: IncomingMessage): string {
  const h = req.headers.host;
  if (h && /^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(h) && h.length <= 255) return h;
  const a = req.socket.localAddress ?? '127.0.0.1';
  const port = req.socket.localPort ?? 19464;
  return a.includes(':') ? `[${a}]:${port}` : `${a}:${port}`;
}
