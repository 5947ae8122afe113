/**
 * args.ts — the argument checks every IPC process makes the same way at its API (api.ts):
 * application names, QoS requests against the DIF's max SDU, and integer options; each failure a
 * DifError with the code the IPC API promises ('invalid_name', 'invalid_qos', 'invalid_argument').
 */
import { DifError, type QosRequest, type QosSpec } from '../api.js';
import { NamingError, toAppName, type AppName } from '../naming.js';

/** An application name argument (`what` names it in the error), or DifError 'invalid_name'. */
export function nameArg(app: AppName | string, what: string): AppName {
  try {
    return toAppName(app);
  } catch (e) {
    if (e instanceof NamingError) throw new DifError('invalid_name', `bad ${what} name: ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * A QoS request with its defaults filled in (unreliable, unordered, max SDU 0 → the DIF's
 * `maxSdu`), as asked: the caller decides what it grants. DifError 'invalid_qos'.
 */
export function resolveQos(q: QosRequest, maxSdu: number, difName: string): { reliable: boolean; inOrder: boolean; maxSdu: number } {
  if (typeof q !== 'object' || q === null) throw new DifError('invalid_qos', 'the QoS spec must be an object');
  const reliable = q.reliable ?? false;
  const inOrder = q.inOrder ?? false;
  const asked = q.maxSdu ?? 0;
  if (typeof reliable !== 'boolean' || typeof inOrder !== 'boolean') throw new DifError('invalid_qos', 'QoS reliable and inOrder must be booleans');
  if (!Number.isInteger(asked) || asked < 0) throw new DifError('invalid_qos', `QoS maxSdu ${String(asked)} must be a non-negative integer`);
  if (asked > maxSdu) throw new DifError('invalid_qos', `QoS maxSdu ${asked} exceeds ${difName}'s max SDU of ${maxSdu} bytes`);
  return { reliable, inOrder, maxSdu: asked === 0 ? maxSdu : asked };
}

/** An integer option in min..max, or DifError 'invalid_argument'. */
export function intArg(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new DifError('invalid_argument', `${name} must be an integer ${min}..${max}, not ${String(v)}`);
  return v;
}

export type { QosSpec };
