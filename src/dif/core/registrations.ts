/**
 * registrations.ts — the applications registered at one IPC process, by name key, with the
 * checks the IPC API promises (api.ts: register / unregister / isRegistered): a bad name →
 * 'invalid_name', no handler → 'invalid_argument', twice → 'already_registered', unknown →
 * 'not_registered'. What a registration means beyond that (a directory entry, requests waiting
 * for the application) stays with the IPC process.
 */
import { DifError, type FlowRequest, type Registration } from '../api.js';
import { appNameKey, type AppName } from '../naming.js';
import { nameArg } from './args.js';

/** One registered application. */
export interface RegEntry<H> {
  readonly appName: AppName;
  readonly key: string;
  readonly handler: H;
}

export class Registrations<H extends (request: never) => void = (request: FlowRequest) => void, E extends RegEntry<H> = RegEntry<H>> {
  private readonly byKey = new Map<string, E>();

  constructor(private readonly difName: string) {}

  /** Check and record a registration; `make` builds the entry (called once the checks pass). */
  add(app: AppName | string, handler: H, make: (appName: AppName, key: string) => E): E {
    const appName = nameArg(app, 'application');
    if (typeof handler !== 'function') throw new DifError('invalid_argument', 'register() needs a flow request handler');
    const key = appNameKey(appName);
    if (this.byKey.has(key)) throw new DifError('already_registered', `${key} is already registered in ${this.difName}`);
    const entry = make(appName, key);
    this.byKey.set(key, entry);
    return entry;
  }

  /** The registration of `app`, or DifError 'not_registered' (a bad name: 'invalid_name'). */
  find(app: AppName | string): E {
    const key = appNameKey(nameArg(app, 'application'));
    const entry = this.byKey.get(key);
    if (!entry) throw new DifError('not_registered', `${key} is not registered in ${this.difName}`);
    return entry;
  }

  has(app: AppName | string): boolean {
    return this.byKey.has(appNameKey(nameArg(app, 'application')));
  }

  /** The registration of an already checked name, if any. */
  get(app: AppName): E | undefined {
    return this.byKey.get(appNameKey(app));
  }

  /** Forget `entry` if it is still the one registered under its key; false otherwise. */
  remove(entry: E): boolean {
    if (this.byKey.get(entry.key) !== entry) return false;
    this.byKey.delete(entry.key);
    return true;
  }

  values(): IterableIterator<E> {
    return this.byKey.values();
  }

  clear(): void {
    this.byKey.clear();
  }
}

/** The Registration handle an application gets back: unregister() once, a no-op after. */
export function registrationHandle(appName: AppName, difName: string, unregister: () => void): Registration {
  return { appName, difName, unregister };
}
