/**
 * `vmpi guest` without a /dev/vmpiN: the error says why, from a sysfs tree (a fake one here,
 * laid out like /sys/bus/virtio/devices): the carrier (virtio id 0x0029, virtio-gpio's) bound to
 * another driver such as gpio_virtio points at guest-driver/vmpi-modprobe.conf; an unbound
 * carrier asks for the driver; no carrier at all asks for a VMPI device.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findVirtioCarriers, GuestStartError, noDeviceError, startGuest } from '../src/ops/guest.js';

const root = mkdtempSync(join(tmpdir(), 'vmpi-sysfs-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

/** A fake sysfs with the given virtio devices: [name, device id, bound driver or null]. */
function sysfs(name: string, devices: Array<[string, string, string | null]>): string {
  const sys = join(root, name);
  const bus = join(sys, 'bus', 'virtio');
  mkdirSync(join(bus, 'devices'), { recursive: true });
  mkdirSync(join(bus, 'drivers'), { recursive: true });
  for (const [dev, id, driver] of devices) {
    // Real sysfs: bus/virtio/devices/virtioN -> ../../../devices/pci0000:00/.../virtioN
    const real = join(sys, 'devices', 'pci0000:00', dev);
    mkdirSync(real, { recursive: true });
    writeFileSync(join(real, 'device'), `${id}\n`);
    writeFileSync(join(real, 'vendor'), '0x1af4\n');
    if (driver) {
      mkdirSync(join(bus, 'drivers', driver), { recursive: true });
      symlinkSync(`../../../bus/virtio/drivers/${driver}`, join(real, 'driver'));
    }
    symlinkSync(`../../../devices/pci0000:00/${dev}`, join(bus, 'devices', dev));
  }
  return sys;
}

t.test('carrier claimed by gpio_virtio: the error names it and the modprobe.d file', async (t) => {
  const sys = sysfs('claimed', [
    ['virtio0', '0x0001', 'virtio_net'],
    ['virtio1', '0x0029', 'gpio_virtio'],
  ]);
  t.same(findVirtioCarriers(sys), [{ device: 'virtio1', driver: 'gpio_virtio' }], 'only the 0x0029 device, with its driver');
  const e = noDeviceError(sys);
  t.ok(e instanceof GuestStartError);
  t.equal(e.code, 'carrier_claimed');
  const message =
    'no /dev/vmpiN in this VM: the VMPI device (virtio id 0x0029, shared with virtio-gpio) is bound to another driver: virtio1 (driver gpio_virtio). ' +
    'Install guest-driver/vmpi-modprobe.conf as /etc/modprobe.d/vmpi.conf (it blacklists gpio_virtio, the vmpi-dkms package does this), ' +
    'then reboot, or now: modprobe -r gpio_virtio; modprobe -r vmpi; modprobe vmpi';
  t.equal(e.message, message, 'names the device and its driver, the modprobe.d file, and the commands for now');
  // startGuest itself: no devices given, none in /dev on this host, the same error.
  t.throws(() => startGuest({ socketPath: join(root, 'ipc.sock'), sysRoot: sys }), { name: 'GuestStartError', code: 'carrier_claimed', message });
});

t.test('carrier present, no driver bound: load vmpi', async (t) => {
  const e = noDeviceError(sysfs('unbound', [['virtio0', '0x0029', null]]));
  t.equal(e.code, 'driver_not_loaded');
  t.equal(e.message, 'no /dev/vmpiN in this VM: the VMPI device is there (virtio0, virtio id 0x0029) but no driver is bound: load the VMPI guest driver (modprobe vmpi, or insmod vmpi.ko)');
});

t.test('carrier bound to vmpi but no device node: devtmpfs', async (t) => {
  const e = noDeviceError(sysfs('bound', [['virtio0', '0x0029', 'vmpi']]));
  t.equal(e.code, 'no_device');
  t.equal(e.message, 'no /dev/vmpiN in this VM although the vmpi driver is bound to the VMPI device: is devtmpfs mounted on /dev?');
});

t.test('no carrier, or no sysfs: give the VM a VMPI device', async (t) => {
  for (const sys of [sysfs('none', [['virtio0', '0x0001', 'virtio_net'], ['virtio1', 'garbage', null]]), join(root, 'nothing-here')]) {
    const e = noDeviceError(sys);
    t.equal(e.code, 'no_device');
    t.equal(e.message, 'no /dev/vmpiN in this VM: load the VMPI guest driver (insmod vmpi.ko) and give the VM a VMPI device');
  }
});
