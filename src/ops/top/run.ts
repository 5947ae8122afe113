/**
 * top/run.ts — what `vmpi top` runs once cli/top.ts has parsed the flags: poll the server
 * (source.ts) every interval, compute the rates (snapshot.ts, flows.ts) and show them (view.ts),
 * either once as a plain table (`--once`: two polls an interval apart, then exit) or live,
 * full-screen, on a terminal.
 *
 * The live view: the terminal's alternate screen, cursor hidden, keys read raw (q, Ctrl-C or
 * Ctrl-D quit; s cycles the device sort), redrawn on every poll and on resize (SIGWINCH). The
 * terminal is restored (main screen back, cursor shown, cooked mode) whatever ends the view: a
 * key, SIGINT, SIGTERM, SIGHUP, the terminal's input closing, or the process exiting on an
 * error. Keys are read only when stdin is a terminal (else SIGINT, Ctrl-C, ends the view). When the
 * server stops answering, the view stays, says "server unreachable, retrying" and keeps polling;
 * rates resume against the last good poll (a counter that went down shows "reset").
 *
 * The clock of the rates is monotonic (performance.now()), never the wall clock.
 */
import { performance } from 'node:perf_hooks';
import { formatListenAddress } from '../config/listen.js';
import type { ListenAddress } from '../config/types.js';
import { flowRates, type FlowInfo, type FlowRow } from './flows.js';
import { ratesBetween, snapshotFrom, type Snapshot } from './snapshot.js';
import { fetchMetrics, FlowSource, TopError } from './source.js';
import { renderView, SORT_KEYS, type SortKey, type ViewState } from './view.js';

export { metricsUrl, TopError } from './source.js';

export interface TopOptions {
  url: string;
  /** IPC daemon socket for the flows (default: the daemon's default path). */
  ipcSocket?: string;
  /** Seconds between polls. */
  intervalS: number;
  /** Width of the --once table (default: the terminal's, else 160). */
  width?: number;
}

/** The metrics URL of a server listening on `listen` (an any-address bind is read on loopback). */
export function urlForListen(listen: ListenAddress): string {
  const host = listen.host === '::' ? '::1' : listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host;
  return `http://${formatListenAddress({ host, port: listen.port })}/metrics`;
}

interface Poll {
  snap: Snapshot;
  flows: FlowInfo[] | { error: string };
}

async function poll(o: TopOptions, ipc: FlowSource, signal?: AbortSignal): Promise<Poll> {
  // The server read its counters somewhere between the request and the answer: take the middle,
  // so a slow answer to one poll does not skew the rate by its whole latency.
  const sent = performance.now();
  const samples = await fetchMetrics(o.url, { timeoutMs: Math.min(5000, Math.max(2000, o.intervalS * 1000)), signal });
  const snap = snapshotFrom(samples, (sent + performance.now()) / 2);
  let flows: Poll['flows'];
  try {
    flows = await ipc.poll();
  } catch (e) {
    flows = { error: (e as Error).message };
  }
  return { snap, flows };
}

function state(o: TopOptions, prev: Poll | undefined, cur: Poll, sort: SortKey): ViewState {
  const rates = ratesBetween(prev?.snap, cur.snap);
  const prevFlows = prev && Array.isArray(prev.flows) ? prev.flows : undefined;
  const flows: FlowRow[] | { error: string } = Array.isArray(cur.flows) ? flowRates(prevFlows, cur.flows, rates.elapsedS) : cur.flows;
  return { url: o.url, snapshot: cur.snap, rates, flows, sort, nowS: Date.now() / 1000 };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `--once`: two polls `intervalS` apart, the table on `out`; exit code 0 (a TopError when unreachable). */
export async function topOnce(o: TopOptions, out: (line: string) => void): Promise<number> {
  const ipc = new FlowSource(o.ipcSocket, { timeoutMs: 2000 });
  let first: Poll;
  let second: Poll;
  try {
    first = await poll(o, ipc);
    await sleep(o.intervalS * 1000);
    second = await poll(o, ipc);
  } finally {
    ipc.close();
  }
  const width = o.width ?? (process.stdout.isTTY ? process.stdout.columns : 160);
  for (const l of renderView(state(o, first, second, 'id'), width)) out(l);
  return 0;
}

const ENTER = '\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J';
const LEAVE = '\x1b[?1049l\x1b[?25h';

/** The live view on the process's terminal until q / Ctrl-C / a signal; exit code 0. */
export async function topLive(o: TopOptions): Promise<number> {
  const stdout = process.stdout;
  const stdin = process.stdin;
  if (!stdout.isTTY) throw new TopError('ERR_TOP_NOT_A_TERMINAL', 'vmpi top: stdout is not a terminal; use --once for a plain table');

  let sort: SortKey = 'id';
  let last: Poll | undefined;
  let view: ViewState = { url: o.url, sort, nowS: Date.now() / 1000, status: `connecting to ${o.url} …`, keys: true };
  let restored = false;
  const write = (s: string): void => {
    try {
      stdout.write(s);
    } catch {
      // the terminal is gone (SIGHUP): nothing to draw on
    }
  };
  const restore = (): void => {
    if (restored) return;
    restored = true;
    if (stdin.isTTY) {
      try {
        stdin.setRawMode(false);
      } catch {
        // terminal gone
      }
    }
    write(LEAVE);
  };
  const draw = (): void => {
    if (restored) return;
    const lines = renderView({ ...view, sort, keys: true, nowS: Date.now() / 1000 }, stdout.columns || 80, stdout.rows || 24);
    write('\x1b[H' + lines.map((l) => l + '\x1b[K').join('\r\n') + '\x1b[J');
  };

  process.on('exit', restore);
  write(ENTER);
  // Keys only from a terminal: a stdin that is a file or /dev/null would end at once (and quit).
  const keys = stdin.isTTY === true;
  if (keys) {
    stdin.setRawMode(true);
    stdin.setEncoding('utf8');
    stdin.resume();
  }

  let timer: NodeJS.Timeout | undefined;
  let finish!: (code: number) => void;
  const done = new Promise<number>((r) => (finish = r));
  const onKey = (k: string): void => {
    for (const c of k) {
      if (c === 'q' || c === 'Q' || c === '\x03' || c === '\x04') return finish(0);
      if (c === 's' || c === 'S') {
        sort = SORT_KEYS[(SORT_KEYS.indexOf(sort) + 1) % SORT_KEYS.length]!;
        draw();
      }
    }
  };
  const onSignal = (): void => finish(0);
  const onEnd = (): void => finish(0);
  if (keys) {
    stdin.on('data', onKey);
    stdin.on('end', onEnd);
  }
  stdout.on('resize', draw);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);

  let stopped = false;
  const abort = new AbortController();
  const ipc = new FlowSource(o.ipcSocket, { timeoutMs: 2000 });
  const tick = async (): Promise<void> => {
    const started = performance.now();
    try {
      const cur = await poll(o, ipc, abort.signal);
      view = { ...state(o, last, cur, sort), keys: true };
      last = cur;
    } catch (e) {
      const why = e instanceof TopError ? e.message : `error: ${(e as Error).message}`;
      view = { ...view, status: `server unreachable, retrying every ${o.intervalS} s (${why})` };
    }
    if (stopped) return;
    draw();
    timer = setTimeout(() => void tick(), Math.max(0, o.intervalS * 1000 - (performance.now() - started)));
  };
  draw();
  void tick();

  const code = await done;
  stopped = true;
  clearTimeout(timer);
  abort.abort();
  ipc.close();
  stdin.off('data', onKey);
  stdin.off('end', onEnd);
  stdout.off('resize', draw);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, onSignal);
  restore();
  process.off('exit', restore);
  if (keys) stdin.pause();
  return code;
}
