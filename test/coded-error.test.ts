// coded-error.test.ts — the typed errors' base: code, message, cause and the subclass's name survive.
import t from 'tap';
import { CodedError } from '../src/sys/coded-error.js';
import { ShimEthError } from '../src/dif/shim-eth/ipcp.js';
import { NamingError } from '../src/dif/naming.js';

t.test('a subclass keeps its name, code, message and cause', (t) => {
  const cause = new Error('ENODEV');
  const e = new ShimEthError('no_interface', 'no interface eth9: create it or fix the config', { cause });
  t.ok(e instanceof ShimEthError && e instanceof CodedError && e instanceof Error);
  t.equal(e.name, 'ShimEthError');
  t.equal(e.code, 'no_interface');
  t.equal(e.message, 'no interface eth9: create it or fix the config');
  t.equal(e.cause, cause);
  t.match(String(e), /^ShimEthError: no interface eth9/);
  t.end();
});

t.test('no cause: none is set (not an own property holding undefined)', (t) => {
  const e = new NamingError('bad_character', 'bad');
  t.notOk(Object.hasOwn(e, 'cause'));
  t.notOk(e instanceof ShimEthError);
  const f = new ShimEthError('invalid_config', 'x', {});
  t.notOk(Object.hasOwn(f, 'cause'));
  t.end();
});
