/**
 * kernel-trouble.ts — what the QEMU tests look for in a guest's kernel log (dmesg or console):
 * oopses, BUGs, warnings, panics. One pattern for every test, with the boot lines that match it
 * without being trouble left out.
 */

/** Lines of a kernel log that say something went wrong in the kernel (KASAN too). */
export const KERNEL_TROUBLE = /Oops|BUG[: ]|WARNING:|Call Trace|general protection|RIP: |KASAN|kernel panic/i;

/**
 * Lines that match KERNEL_TROUBLE without being trouble: "..MP-BIOS bug: 8254 timer not connected
 * to IO-APIC" is the IO-APIC timer check timing out when a TCG guest boots on a loaded host (seen
 * at load average 10+), nothing to do with the driver.
 */
const NOT_TROUBLE = /MP-BIOS bug: 8254 timer not connected/;

/** The lines of `log` that are kernel trouble (none: []). */
export function kernelTrouble(log: string): string[] {
  return log.split('\n').filter((l) => KERNEL_TROUBLE.test(l) && !NOT_TROUBLE.test(l));
}
