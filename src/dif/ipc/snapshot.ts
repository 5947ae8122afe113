/**
 * snapshot.ts — the persisted state of the IPC daemon (daemon.ts): what a new process of the
 * daemon needs to carry on the sessions of applications after the last one died (SIGKILL,
 * upgrade), with the applications' sockets and flows untouched. Its types, version and decoder.
 *
 * A snapshot is plain JSON with `version: 1`. Fds never appear in it as numbers: each fd the
 * daemon holds has a *role* (`s<session>`: the session's socket; `s<session>.f<flow>`: the
 * daemon's end of that flow's socketpair; `s<session>.f<flow>.ring`: a 'ring' flow's memfd,
 * which the successor maps again, resuming from the indices in it, ring.ts), `IpcDaemon.snapshot()` gives the caller the fds by
 * role next to the JSON, and `IpcDaemon.resume()` asks for them back by role.
 *
 * Per session: its id, the peer's credentials checked at accept (SO_PEERCRED is of the peer
 * that connected, which the successor cannot ask again meaningfully: it would be the same, but
 * the limits were applied to these), its registrations (DIF, application name), its flows
 * (handle, DIF, port-id: the restored IPC process gives the Flow back by port-id), the ids of
 * its allocations in progress and of flow requests waiting for its answer (neither survives:
 * the successor answers them with an error / a cancel), its counters, and whether its control
 * stream was in step (conn.ts `step`). The control socket is a stream of length-prefixed
 * frames: a frame the dead process had half read (or read and not parsed), or an answer it had
 * queued and not sent, is lost, and the stream cannot be trusted after it. The successor
 * resumes such a session only to close it: 'mid_request' after an `error` (id null, code
 * 'disconnected') saying why, since its own stream to the application is still in step;
 * 'answers_pending' at once. Recorded cheaply: the state changes only when a read leaves a
 * partial frame or the output queue fills, which is rare. A worker killed between a read that
 * left a partial frame and the persist right after it (same turn) is not covered.
 *
 * Decoding refuses with IpcStateError: 'state_version' for a version other than
 * IPC_DAEMON_SNAPSHOT_VERSION, 'state_invalid' for anything else wrong (a missing or ill-typed
 * field, a duplicate session or flow). Unknown fields are ignored.
 */
import { parseAppName } from '../naming.js';
import type { StreamStep } from './conn.js';

/** The `version` this code writes and the only one it restores. */
export const IPC_DAEMON_SNAPSHOT_VERSION = 1;

/** Sessions a snapshot may list (more is not a snapshot this code wrote). */
const MAX_SESSIONS = 1 << 20;

export type IpcStateErrorCode = 'state_version' | 'state_invalid';

export class IpcStateError extends Error {
  override name = 'IpcStateError';
  constructor(
    readonly code: IpcStateErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface IpcSessionRegistrationSnapshot {
  dif: string;
  /** The application name, string form. */
  app: string;
}

export interface IpcSessionFlowSnapshot {
  /** The session's handle for the flow (what the application knows it by). */
  handle: number;
  dif: string;
  /** The flow's port-id in its IPC process. */
  portId: number;
  /** Role of the daemon's end of the flow's socketpair. */
  socket: string;
  /** A 'ring' flow: role of its ring's memfd. */
  ring?: string;
}

export interface IpcSessionSnapshot {
  id: number;
  /** Role of the session's control socket. */
  socket: string;
  /** SO_PEERCRED at accept; uid -1 when it was unknown. */
  cred: { uid: number; pid: number; gid: number };
  /** The control stream's step (see the file comment): other than 'in_step', the session is closed on resume. */
  stream: StreamStep;
  registrations: IpcSessionRegistrationSnapshot[];
  flows: IpcSessionFlowSnapshot[];
  /** Request ids of allocations in progress (answered with an error on resume). */
  allocations: number[];
  /** Ids of flow requests waiting for the application's answer (cancelled on resume). */
  requests: number[];
  nextRequest: number;
  nextFlow: number;
}

export interface IpcDaemonSnapshot {
  version: typeof IPC_DAEMON_SNAPSHOT_VERSION;
  /** The last session id given out (ids are not reused). */
  lastSession: number;
  sessions: IpcSessionSnapshot[];
}

/** Role of a session's control socket. */
export function sessionRole(id: number): string {
  return `s${id}`;
}

/** Role of a 'ring' flow's memfd. */
export function flowRingRole(session: number, handle: number): string {
  return `s${session}.f${handle}.ring`;
}

/** Role of the daemon's end of a session's flow. */
export function flowRole(session: number, handle: number): string {
  return `s${session}.f${handle}`;
}

type Obj = Record<string, unknown>;

function invalid(where: string, what: string): IpcStateError {
  return new IpcStateError('state_invalid', `IPC daemon snapshot: ${where} ${what}; it was not written by this code (or was damaged): the sessions in it cannot be resumed`);
}

function obj(v: unknown, where: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(where, 'is not an object');
  return v as Obj;
}

function int(v: unknown, where: string, min: number, max = 2 ** 53 - 1): number {
  if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) throw invalid(where, `is not an integer in ${min}..${max}`);
  return v as number;
}

function str(v: unknown, where: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 4096) throw invalid(where, 'is not a non-empty string');
  return v;
}

function arr(v: unknown, where: string, max: number): unknown[] {
  if (!Array.isArray(v) || v.length > max) throw invalid(where, `is not an array of at most ${max} entries`);
  return v;
}

function ints(v: unknown, where: string): number[] {
  return arr(v, where, 1 << 20).map((x, i) => int(x, `${where}[${i}]`, 0));
}

/** Check a snapshot another process wrote (as read back from JSON). Throws IpcStateError. */
export function parseIpcDaemonSnapshot(v: unknown): IpcDaemonSnapshot {
  const top = obj(v, 'the snapshot');
  if (top.version !== IPC_DAEMON_SNAPSHOT_VERSION) {
    throw new IpcStateError('state_version', `IPC daemon snapshot: version ${JSON.stringify(top.version)}; this code reads version ${IPC_DAEMON_SNAPSHOT_VERSION} only: resume with the version that wrote it, or start afresh (the applications reconnect)`);
  }
  const lastSession = int(top.lastSession, 'lastSession', 0);
  const ids = new Set<number>();
  const roles = new Set<string>();
  const sessions = arr(top.sessions, 'sessions', MAX_SESSIONS).map((raw, i): IpcSessionSnapshot => {
    const w = `sessions[${i}]`;
    const s = obj(raw, w);
    const id = int(s.id, `${w}.id`, 1, lastSession);
    if (ids.has(id)) throw invalid(`${w}.id`, `repeats session ${id}`);
    ids.add(id);
    const role = (r: unknown, where: string): string => {
      const x = str(r, where);
      if (roles.has(x)) throw invalid(where, `repeats the fd role ${x}`);
      roles.add(x);
      return x;
    };
    const c = obj(s.cred, `${w}.cred`);
    if (s.stream !== 'in_step' && s.stream !== 'mid_request' && s.stream !== 'answers_pending') throw invalid(`${w}.stream`, 'is not in_step, mid_request or answers_pending');
    const handles = new Set<number>();
    const flows = arr(s.flows, `${w}.flows`, 1 << 20).map((fr, j): IpcSessionFlowSnapshot => {
      const fw = `${w}.flows[${j}]`;
      const f = obj(fr, fw);
      const handle = int(f.handle, `${fw}.handle`, 1);
      if (handles.has(handle)) throw invalid(`${fw}.handle`, `repeats flow ${handle}`);
      handles.add(handle);
      const out: IpcSessionFlowSnapshot = { handle, dif: str(f.dif, `${fw}.dif`), portId: int(f.portId, `${fw}.portId`, 0), socket: role(f.socket, `${fw}.socket`) };
      if (f.ring !== undefined) out.ring = role(f.ring, `${fw}.ring`);
      return out;
    });
    const registrations = arr(s.registrations, `${w}.registrations`, 1 << 20).map((rr, j): IpcSessionRegistrationSnapshot => {
      const rw = `${w}.registrations[${j}]`;
      const r = obj(rr, rw);
      const app = str(r.app, `${rw}.app`);
      try {
        parseAppName(app);
      } catch (e) {
        throw invalid(`${rw}.app`, `is not an application name (${(e as Error).message})`);
      }
      return { dif: str(r.dif, `${rw}.dif`), app };
    });
    return {
      id,
      socket: role(s.socket, `${w}.socket`),
      cred: { uid: int(c.uid, `${w}.cred.uid`, -1), pid: int(c.pid, `${w}.cred.pid`, -1), gid: int(c.gid, `${w}.cred.gid`, -1) },
      stream: s.stream,
      registrations,
      flows,
      allocations: ints(s.allocations, `${w}.allocations`),
      requests: ints(s.requests, `${w}.requests`),
      nextRequest: int(s.nextRequest, `${w}.nextRequest`, 1),
      nextFlow: int(s.nextFlow, `${w}.nextFlow`, 1),
    };
  });
  return { version: IPC_DAEMON_SNAPSHOT_VERSION, lastSession, sessions };
}

/** The port-ids of the flows a snapshot's sessions hold, by DIF: what their IPC processes must keep on their own restore. */
export function ipcSnapshotFlows(snap: IpcDaemonSnapshot): Map<string, Set<number>> {
  const m = new Map<string, Set<number>>();
  for (const s of snap.sessions) {
    if (s.stream !== 'in_step') continue;
    for (const f of s.flows) {
      let set = m.get(f.dif);
      if (!set) m.set(f.dif, (set = new Set()));
      set.add(f.portId);
    }
  }
  return m;
}
