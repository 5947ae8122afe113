/**
 * guest-console.test.ts — how the QEMU tests read numbers off the guest's serial console. It
 * delivers output in arbitrary chunks, so a pid or exit status is read only once its line has
 * ended. Read before, a prefix of the digits could be taken ("VMPI-BG 1" of 1873: `kill 1` hits
 * init, which ignores it), the likely reason vmpi-rx-zero-copy-qemu's channel 7 never unbound in CI.
 */
import t from 'tap';
import { backgroundPid } from './helpers/guest.js';

t.test('a background pid is read only once its line has ended', async (t) => {
  const text = 'vmpi-perf -d 600000 recv /dev/vmpi0 7 100 1000 & echo "VMPI-BG $!"\r\n[1] 1873\r\nVMPI-BG 1873\r\n# ';
  // Feed it at every split point, as chunks arrive: the first pid read must be the whole one.
  for (let cut = 1; cut <= text.length; cut++) {
    const seen = [text.slice(0, cut), text].map(backgroundPid).find((p) => p !== undefined);
    if (seen !== 1873) {
      t.fail(`after ${JSON.stringify(text.slice(0, cut).slice(-12))} read pid ${seen}`);
      return;
    }
  }
  t.pass('no prefix of the digits is taken for the pid');
  t.equal(backgroundPid('VMPI-BG 18'), undefined, 'a line still arriving has no pid yet');
  t.equal(backgroundPid('echo "VMPI-BG $!"\r\n'), undefined, 'the echoed command line is not a pid');
  t.equal(backgroundPid('VMPI-BG 42\n'), 42, 'a bare newline ends the line too');
});
