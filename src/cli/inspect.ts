/**
 * cli/inspect.ts — `vmpi ipcp list` and `vmpi dif show NAME`: a look inside a running `vmpi serve`
 * or `vmpi guest` through its IPC daemon's socket; the flags checked and handed to
 * src/ops/inspect-cli.ts (loaded only when a command runs: --help needs no addon).
 */
import { UsageError, parse, str } from './args.js';
import { help } from './help.js';

const OPTIONS = { 'ipc-socket': { type: 'string' }, json: { type: 'boolean' } } as const;
const out = (line: string): void => void process.stdout.write(line + '\n');

export async function ipcp(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '-h' || sub === '--help' || sub === 'help') return help('ipcp');
  if (sub !== 'list') throw new UsageError(`vmpi ipcp: unknown subcommand "${sub}"; see vmpi ipcp --help`);
  const { values } = parse('ipcp list', rest, OPTIONS);
  if (values.help) return help('ipcp');
  const cli = await import('../ops/inspect-cli.js');
  return cli.ipcpList({ ipcSocket: str(values['ipc-socket']), json: values.json === true }, out);
}

export async function dif(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '-h' || sub === '--help' || sub === 'help') return help('dif');
  if (sub !== 'show') throw new UsageError(`vmpi dif: unknown subcommand "${sub}"; see vmpi dif --help`);
  const { values, positionals } = parse('dif show', rest, OPTIONS, true);
  if (values.help) return help('dif');
  if (positionals.length !== 1) throw new UsageError('vmpi dif show: give exactly one DIF name (vmpi ipcp list shows them)');
  const cli = await import('../ops/inspect-cli.js');
  return cli.difShow({ ipcSocket: str(values['ipc-socket']), json: values.json === true, dif: positionals[0]! }, out);
}
