// The QEMU tests' kernel-log check: real trouble is found, the loaded-host boot line is not.
import t from 'tap';
import { kernelTrouble } from './helpers/kernel-trouble.js';

t.same(kernelTrouble('[    0.1] ..MP-BIOS bug: 8254 timer not connected to IO-APIC\n[    0.2] vmpi: packed rx'), [], 'the IO-APIC timer line of a slow TCG boot is not trouble');
const log = ['[ 1.0] ok', '[ 2.0] BUG: kernel NULL pointer dereference, address: 0000000000000008', '[ 2.1] WARNING: CPU: 0 PID: 1 at drivers/vmpi.c:10', '[ 2.2] Call Trace:', '[ 2.3] Kernel panic - not syncing', '[ 2.4] BUG kmalloc-64 (Tainted): Poison overwritten', '[ 2.5] KASAN: use-after-free'].join('\n');
t.equal(kernelTrouble(log).length, 6, 'oops, warning, trace, panic, slab BUG and KASAN lines are all trouble');
t.same(kernelTrouble(''), [], 'an empty log has none');
