/**
 * exposition.ts — what the metrics tests share to read a Prometheus endpoint: one bounded HTTP
 * request (`httpGet`) and the value of one sample line in a text exposition (`sample`).
 * Owns: nothing else; the family-level parsing for name checks is promql-names.ts's.
 */
import { request } from 'node:http';

export interface HttpReply {
  status: number;
  type: string | undefined;
  body: string;
  /** How long the request took, in milliseconds. */
  ms: number;
}

/** One request with its own agent and a bound: no answer within `timeoutMs` rejects. */
export function httpGet(url: string, o: { method?: string; timeoutMs?: number } = {}): Promise<HttpReply> {
  const timeoutMs = o.timeoutMs ?? 30_000;
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method ?? 'GET', agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body, ms: performance.now() - t0 }),
      );
    });
    req.on('timeout', () => req.destroy(new Error(`${o.method ?? 'GET'} ${url}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** The value of one sample line `name{labels} value` (labels in the order prom-client prints them). */
export function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const l = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',');
  const line = text.split('\n').find((x) => x.startsWith(`${name}{${l}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}
