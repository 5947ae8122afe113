/**
 * cli/qemu-args.ts — `vmpi qemu-args`: the QEMU 10 arguments (one per line) that attach a VM to a
 * device's vhost-user socket (shared memfd RAM, the chardev, the carrier's device).
 */
import { CARRIERS, GPIO_CARRIER } from '../vmpi/carrier.js';
import { UsageError, parse } from './args.js';
import { help } from './help.js';

export function qemuArgs(args: string[]): number {
  const { values } = parse('qemu-args', args, {
    socket: { type: 'string', multiple: true },
    id: { type: 'string', multiple: true },
    mem: { type: 'string', multiple: true },
  });
  if (values.help) return help('qemu-args');
  const one = (name: string, v: string[] | undefined): string | undefined => {
    if (v !== undefined && v.length > 1) throw new UsageError(`vmpi qemu-args: --${name} given ${v.length} times; it describes one device, give it once`);
    return v?.[0];
  };
  const socket = one('socket', values.socket as string[] | undefined);
  if (socket === undefined) throw new UsageError('vmpi qemu-args: --socket PATH is required');
  const id = one('id', values.id as string[] | undefined) ?? 'vmpi0';
  if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(id)) throw new UsageError(`vmpi qemu-args: --id ${id}: QEMU ids start with a letter and use letters, digits, '.', '_' and '-'`);
  const mem = one('mem', values.mem as string[] | undefined) ?? '512M';
  if (!/^[1-9][0-9]*[KMGT]?$/.test(mem)) throw new UsageError(`vmpi qemu-args: --mem ${mem}: expected a size such as 512M, 8G or 1073741824`);
  // QEMU's option syntax: a comma inside a value is written twice.
  const q = (v: string): string => v.replaceAll(',', ',,');
  const carrier = CARRIERS.get('gpio') ?? GPIO_CARRIER;
  const lines = [
    '-object',
    `memory-backend-memfd,id=mem,size=${mem},share=on`,
    '-machine',
    'q35,memory-backend=mem',
    '-m',
    mem,
    '-chardev',
    `socket,id=${id},path=${q(socket)}`,
    '-device',
    `${carrier.qemuDevice},chardev=${id},id=${id}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
