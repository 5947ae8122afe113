/**
 * scale-settings.ts — bench:scale's settings from its SCALE_… variables, checked, with a typed
 * error that names the variable, what was wrong and what to give instead.
 *
 *   SCALE_DEVICES        device counts of the sweep (1,2,4,8,16); the server has the largest
 *   SCALE_SERVERS        layouts to compare, interleaved (1,2): 1 = one server with every device;
 *                        k = k servers, device i on server i mod k (one process per group of
 *                        devices: what more cores give without changing the server). The soak
 *                        uses the first
 *   SCALE_SIZES          SDU sizes in bytes (64,4000)
 *   SCALE_SECONDS        measured window per count and size (3), after a warm-up
 *   SCALE_QUEUE_SIZE     the front-ends' queue size (256, as bench:datapath)
 *   SCALE_REPEATS        sweeps, interleaved (the order of the counts turns each time); medians (3)
 *   SCALE_SOAK_SECONDS   0 (default): the sweep. N > 0: the soak instead, the largest count at
 *                        full rate for N seconds, the server's RSS sampled every interval
 *   SCALE_SOAK_INTERVAL  seconds between RSS samples in the soak (10)
 *   SCALE_SERVER_NODE_FLAGS  Node flags for the servers only, space-separated, each --name or
 *                        --name=value (e.g. --max-semi-space-size=2: V8's young generation)
 *   SCALE_SERVER_FLAG_SETS  sets of server Node flags to compare, interleaved like the layouts:
 *                        ';'-separated sets, each as SCALE_SERVER_NODE_FLAGS or `none` (e.g.
 *                        `none;--max-semi-space-size=2`); every layout runs once per set, after
 *                        the common SCALE_SERVER_NODE_FLAGS. The soak uses the first set
 */

export class ScaleSettingsError extends Error {
  override name = 'ScaleSettingsError';
  readonly code = 'bad_setting';
}

export interface ScaleSettings {
  devices: number[];
  servers: number[];
  sizes: number[];
  seconds: number;
  queueSize: number;
  repeats: number;
  soakSeconds: number;
  soakInterval: number;
  serverNodeFlags: string[];
  /** Flag sets compared (each a layout of its own); [[]] by default: one, with no extra flags. */
  serverFlagSets: string[][];
}

/** The most devices one server gets (one front-end process each). */
export const MAX_DEVICES = 64;
/** The largest SDU: a VmpiDevice's default max SDU (2^16). */
export const MAX_SIZE = 65536;

function intList(env: NodeJS.ProcessEnv, name: string, fallback: number[], lo: number, hi: number): number[] {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const parts = raw.split(',').map((p) => p.trim());
  const out: number[] = [];
  for (const p of parts) {
    const n = /^\d+$/.test(p) ? Number(p) : Number.NaN;
    if (!Number.isInteger(n) || n < lo || n > hi) throw new ScaleSettingsError(`${name}=${raw}: "${p}" is not an integer in ${lo}..${hi}; give a comma-separated list such as ${fallback.join(',')}`);
    if (out.includes(n)) throw new ScaleSettingsError(`${name}=${raw}: ${n} is given twice; give each value once`);
    out.push(n);
  }
  return out;
}

function num(env: NodeJS.ProcessEnv, name: string, fallback: number, lo: number, hi: number, integer: boolean): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = /^\d+(\.\d+)?$/.test(raw.trim()) ? Number(raw) : Number.NaN;
  if (!(n >= lo && n <= hi) || (integer && !Number.isInteger(n))) throw new ScaleSettingsError(`${name}=${raw}: give ${integer ? 'an integer' : 'a number'} in ${lo}..${hi} (default ${fallback})`);
  return n;
}

/** Space-separated Node flags, each --name or --name=value (`raw` is one set of `name`'s value). */
function nodeFlags(env: NodeJS.ProcessEnv, name: string, raw: string): string[] {
  const flags = raw === '' ? [] : raw.split(/\s+/);
  for (const f of flags) if (!/^--[a-z][a-z0-9-]*(=[A-Za-z0-9._,-]+)?$/.test(f)) throw new ScaleSettingsError(`${name}=${env[name]}: "${f}" is not a Node flag of the form --name or --name=value`);
  return flags;
}

export function readScaleSettings(env: NodeJS.ProcessEnv = process.env): ScaleSettings {
  const devices = intList(env, 'SCALE_DEVICES', [1, 2, 4, 8, 16], 1, MAX_DEVICES);
  const servers = intList(env, 'SCALE_SERVERS', [1, 2], 1, 8);
  const sizes = intList(env, 'SCALE_SIZES', [64, 4000], 1, MAX_SIZE);
  const seconds = num(env, 'SCALE_SECONDS', 3, 0.5, 60, false);
  const queueSize = num(env, 'SCALE_QUEUE_SIZE', 256, 2, 1024, true);
  if ((queueSize & (queueSize - 1)) !== 0) throw new ScaleSettingsError(`SCALE_QUEUE_SIZE=${queueSize}: a split virtqueue's size is a power of 2 (2..1024)`);
  const repeats = num(env, 'SCALE_REPEATS', 3, 1, 50, true);
  const soakSeconds = num(env, 'SCALE_SOAK_SECONDS', 0, 0, 86400, true);
  const soakInterval = num(env, 'SCALE_SOAK_INTERVAL', 10, 1, 600, true);
  if (soakSeconds > 0 && soakSeconds < soakInterval) throw new ScaleSettingsError(`SCALE_SOAK_SECONDS=${soakSeconds} is shorter than SCALE_SOAK_INTERVAL=${soakInterval}: the soak would take no sample; give at least one interval`);
  const serverNodeFlags = nodeFlags(env, 'SCALE_SERVER_NODE_FLAGS', env.SCALE_SERVER_NODE_FLAGS?.trim() ?? '');
  const rawSets = env.SCALE_SERVER_FLAG_SETS?.trim() ?? '';
  const serverFlagSets = rawSets === '' ? [[]] : rawSets.split(';').map((set) => (set.trim() === 'none' ? [] : nodeFlags(env, 'SCALE_SERVER_FLAG_SETS', set.trim())));
  const labels = serverFlagSets.map((f) => f.join(' '));
  for (const [i, l] of labels.entries()) if (labels.indexOf(l) !== i) throw new ScaleSettingsError(`SCALE_SERVER_FLAG_SETS=${rawSets}: the set "${l || 'none'}" is given twice; give each set once`);
  return { devices: [...devices].sort((a, b) => a - b), servers, sizes, seconds, queueSize, repeats, soakSeconds, soakInterval, serverNodeFlags, serverFlagSets };
}
