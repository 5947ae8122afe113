/**
 * cli/check-config.ts — `vmpi check-config FILE` (validate, with host look-ups; exit 0/1/2) and
 * `vmpi check-config --schema` (print the JSON Schema).
 */
import { CONFIG_SCHEMA, ConfigError, configWarnings, formatListenAddress, loadConfigFile, type VmpiConfig } from '../ops/config.js';
import { EXIT_INVALID, UsageError, parse, reportInvalid } from './args.js';
import { help } from './help.js';

export function checkConfig(args: string[]): number {
  const { values, positionals } = parse('check-config', args, { schema: { type: 'boolean' } }, true);
  if (values.help) return help('check-config');
  if (values.schema) {
    if (positionals.length > 0) throw new UsageError('vmpi check-config: --schema takes no FILE');
    process.stdout.write(JSON.stringify(CONFIG_SCHEMA, null, 2) + '\n');
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`vmpi check-config: expected one FILE, got ${positionals.length}; see vmpi check-config --help`);
  const file = positionals[0]!;
  let config: VmpiConfig;
  try {
    config = loadConfigFile(file, { checkHost: true });
  } catch (e) {
    if (e instanceof ConfigError) return reportInvalid('', e);
    throw e;
  }
  const n = config.devices.length;
  if (n === 0 && !config.shimUdp && !config.shimEth) {
    process.stderr.write(`${file}: devices: none: vmpi serve --config ${file} would refuse to start; list devices (or shimUdp, shimEth), or serve it with --socket PATH\n`);
    return EXIT_INVALID;
  }
  for (const w of configWarnings(config.devices.map((d, i) => ({ where: `devices[${i}]`, mode: d.mode })))) process.stderr.write(`${file}: warning: ${w}\n`);
  const ids = config.devices.map((d) => (d.vmpiId === undefined ? 'auto' : String(d.vmpiId)));
  const metrics = config.metrics.enabled ? `metrics on ${formatListenAddress(config.metrics.listen)}` : 'metrics off';
  const nc = config.normal;
  const roles = nc ? [...(nc.role === 'member' ? ['member'] : []), ...(nc.acceptEnrollment ? ['enrolls others'] : []), ...(nc.neighbours?.length ? [`${nc.neighbours.length} neighbour${nc.neighbours.length === 1 ? '' : 's'}`] : [])] : [];
  const normal = nc ? `, normal DIF ${nc.dif}${roles.length > 0 ? ` (${roles.join(', ')})` : ''}` : '';
  const udp = config.shimUdp ? `, shim-udp DIF ${config.shimUdp.dif} on ${config.shimUdp.bind}` : '';
  const eth = config.shimEth ? `, shim-eth DIF ${config.shimEth.dif} on ${config.shimEth.interface}${config.shimEth.vlan !== undefined ? ` VLAN ${config.shimEth.vlan}` : ''}` : '';
  const devices = n === 0 ? 'no device' : `${n} device${n === 1 ? '' : 's'} (VMPI-ids ${ids.join(', ')})`;
  process.stdout.write(`${file}: ok: ${devices}, ${metrics}${udp}${eth}${normal}\n`);
  return 0;
}
