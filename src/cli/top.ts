/**
 * cli/top.ts — `vmpi top`: the flags checked (--url, --config, --ipc-socket, --interval, --once,
 * --width) and handed to src/ops/top/run.ts (loaded only when the command runs: --help needs no
 * addon). The metrics URL is --url, else the one serve's config file gives (--config FILE:
 * metrics.listen), else serve's default (127.0.0.1:19464).
 */
import { UsageError, intArg, numArg, parse, str } from './args.js';
import { help } from './help.js';

const OPTIONS = {
  url: { type: 'string' },
  config: { type: 'string' },
  'ipc-socket': { type: 'string' },
  interval: { type: 'string' },
  once: { type: 'boolean' },
  width: { type: 'string' },
} as const;

export async function top(args: string[]): Promise<number> {
  const { values } = parse('top', args, OPTIONS);
  if (values.help) return help('top');
  const intervalS = numArg('interval', str(values.interval), 0.1, 3600) ?? 1;
  const w = str(values.width);
  const width = w === undefined ? undefined : intArg('width', w, 20, 1000);
  const urlFlag = str(values.url);
  const configFile = str(values.config);
  if (urlFlag !== undefined && configFile !== undefined) throw new UsageError('vmpi top: --url and --config exclude each other (--url wins over a file: give one)');
  const { loadConfigFile, defaultConfig, ConfigError } = await import('../ops/config.js');
  const run = await import('../ops/top/run.js');
  let url = urlFlag;
  if (url === undefined) {
    let metrics = defaultConfig().metrics;
    if (configFile !== undefined) {
      try {
        metrics = loadConfigFile(configFile, { checkHost: false }).metrics;
      } catch (e) {
        if (e instanceof ConfigError) throw new run.TopError('ERR_TOP_CONFIG', `--config ${configFile}: ${e.message}`);
        throw e;
      }
      if (!metrics.enabled) throw new run.TopError('ERR_TOP_CONFIG', `--config ${configFile}: metrics are off in this file (metrics.enabled: false); vmpi top reads the metrics endpoint`);
    }
    url = run.urlForListen(metrics.listen);
  }
  run.metricsUrl(url);
  const o = { url, ipcSocket: str(values['ipc-socket']), intervalS, width };
  if (values.once === true) return run.topOnce(o, (line) => void process.stdout.write(line + '\n'));
  return run.topLive(o);
}
