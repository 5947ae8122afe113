/**
 * metrics-http.ts — the small node:http server that exposes a metrics registry (metrics.ts) as
 * `GET /metrics` (default 127.0.0.1:19464, loopback only unless configured otherwise).
 *
 * The HTTP server is bounded: at most `maxConnections` sockets at once (more are closed as they
 * come), idle sockets closed after `idleTimeoutMs`, a request that takes longer than
 * `requestTimeoutMs` cut off, and server errors (accept failing with EMFILE while the process is
 * out of fds) logged at most once per 10 s with a count, so a flood cannot fill the log or the
 * fd table.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { logger as rootLogger, type Logger } from '../sys/log.js';
import { formatListenAddress, type ListenAddress } from './config.js';

export interface MetricsServer {
  /** The address actually bound (port 0 resolved). */
  readonly address: ListenAddress;
  /** http://HOST:PORT/metrics */
  readonly url: string;
  readonly stats: Readonly<MetricsServerStats>;
  close(): Promise<void>;
}

export class MetricsServerError extends Error {
  override name = 'MetricsServerError';
}

export interface MetricsServerOptions {
  /** Sockets open at once; more are closed as they are accepted (default 32). */
  maxConnections?: number;
  /** A socket with no traffic this long is closed (default 30 s). */
  idleTimeoutMs?: number;
  /** A request not complete (headers and body) after this long is answered 408 and closed (default 10 s). */
  requestTimeoutMs?: number;
  /**
   * More paths (e.g. the guests' metrics, guest-metrics-fetch.ts): asked for every GET/HEAD
   * that is not /metrics or /; true when it answered, false to fall through to 404.
   */
  routes?: (path: string, req: IncomingMessage, res: ServerResponse) => Promise<boolean>;
}

export interface MetricsServerStats {
  /** Connections closed at once: maxConnections were open. */
  dropped: number;
  /** Server errors (accept failing with EMFILE, ENFILE, …). */
  errors: number;
}

/** A log line repeated at most once per 10 s, with how many were suppressed. */
function throttled(log: Logger, msg: string): (fields: Record<string, unknown>) => void {
  let last = 0;
  let suppressed = 0;
  return (fields) => {
    const now = Date.now();
    if (now - last < 10_000) {
      suppressed++;
      return;
    }
    log.warn({ ...fields, suppressed }, msg);
    last = now;
    suppressed = 0;
  };
}

/** Serve `GET /metrics` from `source` on `listen`. Rejects with a MetricsServerError if it cannot bind. */
export function startMetricsServer(
  source: { metrics(): Promise<string>; registry: Registry },
  listen: ListenAddress,
  logger: Logger = rootLogger,
  opts: MetricsServerOptions = {},
): Promise<MetricsServer> {
  const log = logger.child({ component: 'metrics' });
  const stats: MetricsServerStats = { dropped: 0, errors: 0 };
  const idleTimeoutMs = opts.idleTimeoutMs ?? 30_000;
  const requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
  const server: Server = createServer({ requestTimeout: requestTimeoutMs, headersTimeout: Math.min(requestTimeoutMs, 10_000), connectionsCheckingInterval: Math.min(1000, requestTimeoutMs) }, (req, res) => {
    handle(source, req, res, opts.routes).catch((e: unknown) => {
      log.error({ err: (e as Error).message }, 'metrics request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('internal error\n');
    });
  });
  server.keepAliveTimeout = Math.min(10_000, idleTimeoutMs);
  server.maxConnections = opts.maxConnections ?? 32;
  // Idle sockets (connected, nothing sent, or a keep-alive nobody uses) are destroyed.
  server.setTimeout(idleTimeoutMs, (socket) => socket.destroy());
  const logDrop = throttled(log, 'metrics: too many connections, closing new ones');
  server.on('drop', () => {
    stats.dropped++;
    logDrop({ maxConnections: server.maxConnections });
  });
  const logError = throttled(log, 'metrics server error');
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      const where = formatListenAddress(listen);
      const hint = e.code === 'EADDRINUSE' ? '; choose another with --metrics-listen (metrics.listen) or turn metrics off with --no-metrics' : '';
      reject(new MetricsServerError(`metrics: cannot listen on ${where}: ${e.code ?? e.message}${hint}`));
    };
    server.once('error', onError);
    server.listen(listen.port, listen.host, () => {
      server.off('error', onError);
      server.on('error', (e: NodeJS.ErrnoException) => {
        stats.errors++;
        logError({ err: e.message, code: e.code });
      });
      const a = server.address() as AddressInfo;
      const address = { host: a.address, port: a.port };
      const url = `http://${formatListenAddress(address)}/metrics`;
      log.info({ url }, 'metrics listening');
      resolve({
        address,
        url,
        stats,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

async function handle(source: { metrics(): Promise<string>; registry: Registry }, req: IncomingMessage, res: ServerResponse, routes?: MetricsServerOptions['routes']): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
    res.end('method not allowed\n');
    return;
  }
  if (path === '/metrics') {
    const body = await source.metrics();
    res.writeHead(200, { 'content-type': source.registry.contentType, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  if (path === '/') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('vmpi metrics: GET /metrics\n');
    return;
  }
  if (routes && path !== undefined && (await routes(path, req, res))) return;
  res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
  res.end('not found: try /metrics\n');
}
