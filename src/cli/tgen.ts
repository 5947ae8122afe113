/**
 * cli/tgen.ts — `vmpi tgen server|client|plot`: the traffic generator's options checked and turned
 * into calls of src/ops/tgen-cli.ts (loaded only when a mode runs: --help needs no addon).
 */
import { UsageError, intArg, numArg, parse, signalled, str } from './args.js';
import { help } from './help.js';

export async function tgen(args: string[]): Promise<number> {
  const [mode, ...rest] = args;
  if (mode === undefined || mode === '-h' || mode === '--help' || mode === 'help') return help('tgen');
  const common = { dif: { type: 'string' }, app: { type: 'string' }, 'ipc-socket': { type: 'string' } } as const;
  const out = (line: string): void => void process.stdout.write(line + '\n');
  // Loaded here: --help does not need the addon.
  const cli = await import('../ops/tgen-cli.js');
  if (mode === 'server') {
    const { values } = parse('tgen server', rest, common);
    if (values.help) return help('tgen');
    return cli.tgenServer({ ipcSocket: str(values['ipc-socket']), dif: str(values.dif), app: str(values.app) }, signalled(), out);
  }
  if (mode === 'client') {
    const { values } = parse('tgen client', rest, {
      ...common,
      src: { type: 'string' },
      size: { type: 'string' },
      duration: { type: 'string' },
      count: { type: 'string' },
      unreliable: { type: 'boolean' },
      sweep: { type: 'boolean' },
      sizes: { type: 'string' },
      repeats: { type: 'string' },
      csv: { type: 'string' },
      svg: { type: 'string' },
      label: { type: 'string' },
      title: { type: 'string' },
    });
    if (values.help) return help('tgen');
    const sweep = values.sweep === true;
    for (const k of ['sizes', 'repeats', 'csv', 'svg', 'label', 'title']) if (!sweep && values[k] !== undefined) throw new UsageError(`vmpi tgen client: --${k} needs --sweep`);
    if (sweep && (values.size !== undefined || values.count !== undefined)) throw new UsageError('vmpi tgen client: --size and --count are for single runs, not --sweep');
    if (values.count !== undefined && values.duration !== undefined) throw new UsageError('vmpi tgen client: --count and --duration exclude each other');
    const { parseSizes } = await import('../dif/tgen.js');
    let sizes: number[] = [];
    try {
      sizes = parseSizes(str(values.sizes) ?? '0:4000:250');
    } catch (e) {
      throw new UsageError(`vmpi tgen client: ${(e as Error).message}`);
    }
    return cli.tgenClient(
      {
        ipcSocket: str(values['ipc-socket']),
        dif: str(values.dif),
        app: str(values.app),
        src: str(values.src),
        size: numArg('size', str(values.size), 0, 1 << 30) ?? 1000,
        durationMs: (numArg('duration', str(values.duration), 0.001, 86400) ?? 1) * 1000,
        count: values.count === undefined ? undefined : intArg('count', str(values.count) ?? '', 0, Number.MAX_SAFE_INTEGER),
        reliable: values.unreliable !== true,
        sweep: sweep
          ? {
              sizes,
              repeats: values.repeats === undefined ? 20 : intArg('repeats', str(values.repeats) ?? '', 1, 100000),
              csv: str(values.csv),
              svg: str(values.svg),
              label: str(values.label) ?? 'vmpi shim-hv',
              title: str(values.title),
            }
          : undefined,
      },
      out,
    );
  }
  if (mode === 'plot') {
    const { values, positionals } = parse('tgen plot', rest, { svg: { type: 'string' }, title: { type: 'string' } }, true);
    if (values.help) return help('tgen');
    const svg = str(values.svg);
    if (svg === undefined) throw new UsageError('vmpi tgen plot: --svg FILE is required');
    if (positionals.length === 0) throw new UsageError('vmpi tgen plot: give at least one LABEL=FILE.csv');
    const inputs = positionals.map((p) => {
      const i = p.indexOf('=');
      if (i <= 0 || i === p.length - 1) throw new UsageError(`vmpi tgen plot: ${p}: expected LABEL=FILE.csv`);
      return { label: p.slice(0, i), file: p.slice(i + 1) };
    });
    return cli.tgenPlot(inputs, svg, str(values.title), out);
  }
  throw new UsageError(`vmpi tgen: unknown mode "${mode}"; expected server, client or plot (see vmpi tgen --help)`);
}
