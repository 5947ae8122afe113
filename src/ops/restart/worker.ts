/**
 * worker.ts — the restart side of a serving process: what it keeps for the next worker, and
 * what it takes over from the last one.
 *
 * Owns: the only code that knows every layer's state. It mirrors the fds each layer holds into
 * the fd store (fd-registry.ts, by scope: a device's listening socket, its connection) and
 * writes the state document (document.ts) into the state memfd (state-file.ts) after every
 * change and before the change is acted on further: a vhost-user request's effect is persisted
 * before its reply goes out (the connection's commit hook); an accepted front-end is kept with
 * its first request (QEMU sends GET_FEATURES at once: a crash between accept and that first
 * reply loses the connection, which a flood of hostile connections would otherwise make costly). At start it reads the document the last worker left and resumes each
 * device's connection (Connection resume: memory mapped again, rings rewound to the used index,
 * one call per queue) if every fd it names came back and the device's config still matches.
 *
 * What is lost across a restart (the bounds the tests assert): host → guest SDUs that were in
 * the dead worker's memory only (backlogs, SDUs an application had written but the worker not
 * yet put in a ring); a guest → host chain the dead worker had delivered but not completed is
 * delivered again (a duplicate). Host applications' IPC sessions carry on (their sockets and
 * their flows' socketpair ends are kept, scope `ipc.s<session>`; the IPC daemon's snapshot is
 * persisted on each change of a session, src/dif/ipc/snapshot.ts); SDUs the dead worker held
 * between an application's socket and its flow are lost, and a session whose control stream
 * was mid-frame is closed by the next worker.
 */
import { errText, safeClose } from '../../sys/fd.js';
import type { Logger } from '../../sys/log.js';
import { native } from '../../sys/native.js';
import type { Connection } from '../../vhost-user/connection.js';
import type { VhostUserServer } from '../../vhost-user/server.js';
import { StateError, setStateFd, stateFds, stateFromJSON, withoutFds } from '../../vhost-user/state.js';
import type { VmpiDevice, VmpiDeviceSnapshot } from '../../vmpi/device.js';
import { DOCUMENT_FORMAT, DOCUMENT_VERSION, parseDocument, type ConnectionDoc, type DeviceDoc, type IpcDoc, type RestartDocument } from './document.js';
import { ipcSnapshotFlows, parseIpcDaemonSnapshot, type IpcDaemonSnapshot } from '../../dif/ipc/snapshot.js';
import type { Flow } from '../../dif/api.js';
import { FdRegistry } from './fd-registry.js';
import { NAME_PREFIX, STATE_NAME, type FdHolder } from './fd-store.js';
import { StateFile } from './state-file.js';

export interface RestartStats {
  /** Who holds the fds: "keeper", "systemd" or "none". */
  readonly holder: string;
  /** Restarts this server survived (from the document, plus this one when it resumed). */
  restarts: number;
  /** Connections resumed, and resumes that failed, since the server first started (all workers). */
  connectionsResumed: number;
  resumeFailures: number;
  stateWrites: number;
  stateWriteErrors: number;
  /** Files in the fd store now. */
  storedFds(): number;
}

export interface DeviceConfig {
  vmpiId: number;
  maxSduLog2: number;
  carrier: string;
}

interface Attached {
  device: VmpiDevice;
  server: VhostUserServer;
  config: DeviceConfig;
  /** The device's shim DIF IPC process's snapshot (its own format). */
  shim: (() => unknown) | undefined;
}

/** What the restart code needs of the IPC daemon. */
export interface ListeningDaemon {
  readonly listeningFd: number;
  /** Its sessions' state and fds by role (src/dif/ipc/snapshot.ts). */
  snapshot?(): { state: IpcDaemonSnapshot; fds: Map<string, number> };
  resume?(snapshot: unknown, fd: (role: string) => number | undefined, reclaim: (dif: string, portId: number) => Flow | undefined): unknown;
}

export class Restarter {
  readonly stats: RestartStats;
  /** The document the last worker left, when there was one. */
  readonly previous: RestartDocument | undefined;
  private readonly registry: FdRegistry;
  private readonly stateFile: StateFile;
  private readonly inherited: Map<string, number[]>;
  private readonly used = new Set<number>();
  private readonly devices = new Map<number, Attached>();
  private ipcDaemon: ListeningDaemon | undefined;
  private readonly mismatchLogged = new Set<number>();
  /** The fds of each IPC session scope at its last sync. */
  private readonly ipcScopes = new Map<string, Set<number>>();
  /** The IPC daemon's snapshot the last worker left (checked), when there was one. */
  private readonly ipcPrevious: IpcDaemonSnapshot | undefined;
  private starting = true;
  private abandoned = false;
  /** The datagram shims' snapshot functions, by document key. */
  private readonly shims = new Map<string, () => unknown>();
  /** Set while a connection is being resumed: its fds came from the store, none is fresh. */
  private resuming = false;
  /** Connections whose fds are in the store (from their first request, or resumed). */
  private readonly saved = new WeakSet<Connection>();

  /**
   * Take over what the fd holder gave back (`inherited`: name → fds). Throws StateError when the
   * document is of another version: the caller exits with EXIT_STATE_REFUSED, touching nothing.
   */
  constructor(
    holder: FdHolder,
    inherited: Map<string, number[]>,
    private readonly log: Logger,
    private readonly version: string,
  ) {
    this.inherited = new Map([...inherited].filter(([name]) => name.startsWith(NAME_PREFIX)));
    this.registry = new FdRegistry(holder, log);
    const stateFd = this.inherited.get(STATE_NAME)?.[0];
    let previous: RestartDocument | undefined;
    if (stateFd !== undefined) {
      this.used.add(stateFd);
      this.stateFile = StateFile.open(stateFd);
      const text = this.stateFile.read()?.text;
      if (text !== undefined) previous = parseDocument(text); // throws StateError
    } else {
      this.stateFile = StateFile.create();
      holder.put(STATE_NAME, [this.stateFile.fd]);
    }
    this.previous = previous;
    let ipcPrevious: IpcDaemonSnapshot | undefined;
    try {
      if (previous?.ipc) ipcPrevious = parseIpcDaemonSnapshot(previous.ipc.state);
    } catch (e) {
      log.error({ err: errText(e) }, "the IPC daemon's saved sessions are unusable; host applications must reconnect");
    }
    this.ipcPrevious = ipcPrevious;
    for (const [name, fds] of this.inherited) if (name !== STATE_NAME) for (const fd of fds) this.registry.adopt(name, fd);
    const stats: RestartStats = {
      holder: holder.kind,
      restarts: (previous?.restarts ?? 0) + (previous ? 1 : 0),
      connectionsResumed: previous?.resumed ?? 0,
      resumeFailures: previous?.resumeFailures ?? 0,
      stateWrites: 0,
      stateWriteErrors: 0,
      storedFds: () => this.registry.size + 1,
    };
    this.stats = stats;
    if (previous) {
      const age = Date.now() - previous.writtenAt;
      log.info({ holder: holder.kind, writtenBy: previous.writtenBy, stateAgeMs: age, devices: previous.devices.length, fds: [...this.inherited.values()].reduce((n, l) => n + l.length, 0) }, 'resuming from the state the last worker left');
    }
  }

  /** The state memfd (the upgrade check reads it). */
  get stateFd(): number {
    return this.stateFile.fd;
  }

  /** The listening socket the last worker used for this device, if it is still the same device. */
  listenFdFor(cfg: DeviceConfig): number | undefined {
    const doc = this.docFor(cfg);
    if (!doc?.listen) return undefined;
    return this.take(doc.listen);
  }

  /** The shim DIF snapshot the last worker left for this device, when it is still the same device. */
  shimSnapshotFor(cfg: DeviceConfig): unknown {
    const shim = this.docFor(cfg)?.shim;
    return shim === null ? undefined : shim;
  }

  /** The snapshot the last worker left for the datagram shim `key` ("<type>:<DIF name>"), if any. */
  shimSnapshotOf(key: string): unknown {
    return this.previous?.shims[key];
  }

  /** A datagram shim runs: its snapshot goes into every document from now on. */
  attachShim(key: string, snapshot: () => unknown): void {
    this.shims.set(key, snapshot);
    this.persist();
  }

  /** A datagram shim's onStateChange: persist (its flow table changed). */
  readonly shimChanged = (): void => {
    this.persist();
  };

  /** The IPC daemon's listening socket the last worker used. */
  ipcListenFd(): number | undefined {
    const name = this.previous?.ipcListen;
    return name ? this.take(name) : undefined;
  }

  /**
   * For a shim DIF IPC process's restore (its keepFlows): whether an IPC session of the last
   * worker held this flow (it is kept for resumeIpc to reclaim).
   */
  readonly ipcKeptFlow = (portId: number, difName: string): boolean => {
    this.ipcKept ??= this.ipcPrevious ? ipcSnapshotFlows(this.ipcPrevious) : new Map();
    return this.ipcKept.get(difName)?.has(portId) === true;
  };
  private ipcKept: Map<string, Set<number>> | undefined;

  /**
   * Resume the IPC sessions the last worker left on `daemon` (before it listens): their fds come
   * from the store, their flows from `reclaim`. Never throws (a failure is logged: the
   * applications reconnect).
   */
  resumeIpc(daemon: ListeningDaemon, reclaim: (dif: string, portId: number) => Flow | undefined): void {
    const prev = this.previous?.ipc;
    if (!prev || !this.ipcPrevious || !daemon.resume) return;
    try {
      daemon.resume(this.ipcPrevious, (role) => (prev.fds[role] ? this.take(prev.fds[role]) : undefined), reclaim);
    } catch (e) {
      this.log.error({ err: errText(e) }, 'cannot resume the IPC sessions; host applications must reconnect');
    }
  }

  /** The IPC daemon listens: keep its socket (applications connecting in a restart wait in its backlog) and its sessions' fds. */
  attachIpc(daemon: ListeningDaemon): void {
    this.ipcDaemon = daemon;
    this.registry.batch(() => {
      this.registry.sync('ipc.listen', daemon.listeningFd >= 0 ? [daemon.listeningFd] : []);
      this.syncIpc(true);
    });
    this.persist();
  }

  /** An fd this restarter handed out was closed unused (e.g. a kept socket whose file is gone). */
  released(fd: number): void {
    this.registry.release(fd);
  }

  /** The IPC daemon's onStateChange: keep its sessions' fds, persist (before the application hears of the change). */
  readonly ipcChanged = (): void => {
    if (this.abandoned || !this.ipcDaemon) return;
    this.syncIpc(false);
    this.persist();
  };

  /** Mirror each IPC session's fds (its socket, its flows' ends and ring memfds) into the store, scope `ipc.s<id>`. */
  private syncIpc(first: boolean): void {
    const snap = this.ipcDaemon?.snapshot?.();
    if (!snap) return;
    const seen = new Set<string>();
    this.registry.batch(() => {
      for (const s of snap.state.sessions) {
        const scope = `ipc.s${s.id}`;
        seen.add(scope);
        const live = [s.socket, ...s.flows.flatMap((f) => (f.ring === undefined ? [f.socket] : [f.socket, f.ring]))].map((role) => snap.fds.get(role)).filter((fd): fd is number => fd !== undefined);
        const prev = this.ipcScopes.get(scope);
        // Resumed fds (first sync) came from the store; a number new to its scope is a new file.
        const fresh = first ? [] : live.filter((fd) => !prev?.has(fd));
        this.registry.sync(scope, live, fresh);
        this.ipcScopes.set(scope, new Set(live));
      }
      for (const scope of [...this.ipcScopes.keys()]) {
        if (seen.has(scope)) continue;
        this.registry.drop(scope);
        this.ipcScopes.delete(scope);
      }
    });
  }

  /** The IPC part of the document: the daemon's snapshot with its fds as store names. */
  private ipcDoc(): IpcDoc | null {
    const snap = this.ipcDaemon?.snapshot?.();
    if (!snap) return null;
    const fds: Record<string, string> = {};
    for (const [role, fd] of snap.fds) {
      const name = this.registry.nameOf(fd);
      if (name !== undefined) fds[role] = name;
    }
    return { state: snap.state, fds };
  }

  /** The commit hook for the device's server (see Connection's `commit`). */
  readonly commit = (conn: Connection, received: readonly number[]): void => {
    if (this.abandoned) return;
    // A front-end is kept from its first request on (not from accept): one that never gets a
    // request through (a flood of hostile connections, each closed on its first bad message)
    // costs no fd-store datagrams and no state writes.
    const first = !this.saved.has(conn);
    if (first) this.saved.add(conn);
    this.registry.sync(connScope(conn), connFds(conn), first ? [conn.socketFd, ...received] : received);
    this.persist();
  };

  /**
   * A device is up (its server listens): keep its listening socket, follow its connections,
   * and resume the connection the last worker had, if any.
   */
  attach(device: VmpiDevice, server: VhostUserServer, config: DeviceConfig, shim?: () => unknown): void {
    this.devices.set(config.vmpiId, { device, server, config, shim });
    this.registry.batch(() => {
      this.registry.sync(`dev${config.vmpiId}.listen`, server.listeningFd >= 0 ? [server.listeningFd] : []);
      server.on('connection', (conn) => {
        if (this.abandoned || !this.resuming) return; // a new one is kept at its first commit
        this.saved.add(conn);
        this.registry.sync(connScope(conn), connFds(conn), []);
      });
      server.on('disconnect', (conn) => {
        if (this.abandoned || !this.saved.has(conn)) return;
        this.saved.delete(conn);
        this.registry.drop(connScope(conn));
        this.persist();
      });
      const doc = this.docFor(config);
      if (doc?.connection) this.resumeConnection(device, server, config, doc);
    });
  }

  /** Start-up is over: close inherited fds nobody took, forget their names, persist. */
  started(): void {
    this.starting = false;
    for (const [name, fds] of this.inherited) {
      for (const fd of fds) {
        if (this.used.has(fd)) continue;
        this.log.warn({ name }, 'an fd the last worker kept is not used by this one; releasing it');
        safeClose(fd);
      }
    }
    this.registry.batch(() => undefined); // collect: names of released fds leave the store
    this.persist();
    // Saved without them now: a hand-over's backlogs may go to the guests (at most once).
    for (const a of this.devices.values()) a.device.releaseBacklog();
  }

  /**
   * Write the state document now. Never throws (a failure is logged and counted); false when it
   * was not written. `handover`: the last one of this process (see VmpiDevice.snapshot).
   */
  persist(handover = false): boolean {
    if (this.abandoned || this.starting) return false;
    const doc: RestartDocument = {
      format: DOCUMENT_FORMAT,
      version: DOCUMENT_VERSION,
      writtenBy: this.version,
      restarts: this.stats.restarts,
      resumed: this.stats.connectionsResumed,
      resumeFailures: this.stats.resumeFailures,
      writtenAt: Date.now(),
      devices: [...this.devices.values()].map((a) => this.deviceDoc(a, handover)),
      ipcListen: this.ipcDaemon && this.ipcDaemon.listeningFd >= 0 ? (this.registry.nameOf(this.ipcDaemon.listeningFd) ?? null) : null,
      ipc: this.ipcDoc(),
      shims: Object.fromEntries([...this.shims].map(([k, f]) => [k, f()])),
    };
    try {
      this.stateFile.write(JSON.stringify(doc));
      this.stats.stateWrites++;
      return true;
    } catch (e) {
      this.stats.stateWriteErrors++;
      this.log.error({ err: errText(e) }, 'cannot save the restart state; a restart now would resume an older one');
      return false;
    }
  }

  /**
   * Hand over to the next worker: persist, then stop following anything. The caller abandons
   * the host (no connection closed, no socket file removed) and exits.
   */
  handover(): void {
    const backlog = [...this.devices.values()].reduce((n, a) => n + a.device.stats.backlogSdus, 0);
    // The device backlogs go with it: what the guests were about to get is not lost. A document
    // too large for a slot with them (many devices, each backlog near its bound) goes without.
    if (this.persist(true)) {
      if (backlog > 0) this.log.info({ sdus: backlog }, 'handing over: the device backlogs go to the next worker');
    } else if (backlog > 0 && this.persist(false)) {
      this.log.warn({ sdus: backlog }, 'handing over without the device backlogs (the state could not be written with them): those SDUs are lost');
    }
    this.abandoned = true;
  }

  private deviceDoc(a: Attached, handover: boolean): DeviceDoc {
    const conn = [...a.server.connections][0];
    let connection: ConnectionDoc | null = null;
    if (conn && !conn.isClosed && this.saved.has(conn)) {
      const fds: Record<string, string> = {};
      for (const [role, fd] of stateFds(conn.state)) fds[role] = this.registry.nameOf(fd) ?? '';
      connection = { socket: this.registry.nameOf(conn.socketFd) ?? '', state: withoutFds(conn.snapshot()), fds };
    }
    return {
      vmpiId: a.config.vmpiId,
      maxSduLog2: a.config.maxSduLog2,
      carrier: a.config.carrier,
      listen: a.server.listeningFd >= 0 ? (this.registry.nameOf(a.server.listeningFd) ?? null) : null,
      connection,
      shim: a.shim ? a.shim() : null,
      vmpi: a.device.snapshot(handover),
    };
  }

  private docFor(cfg: DeviceConfig): DeviceDoc | undefined {
    const doc = this.previous?.devices.find((d) => d.vmpiId === cfg.vmpiId);
    if (!doc) return undefined;
    if (doc.maxSduLog2 !== cfg.maxSduLog2 || doc.carrier !== cfg.carrier) {
      // Asked for its listening socket, its shim snapshot and its connection: said once.
      if (this.mismatchLogged.has(cfg.vmpiId)) return undefined;
      this.mismatchLogged.add(cfg.vmpiId);
      this.log.error(
        { vmpiId: cfg.vmpiId, was: { maxSduLog2: doc.maxSduLog2, carrier: doc.carrier }, now: { maxSduLog2: cfg.maxSduLog2, carrier: cfg.carrier } },
        'the config of this VMPI device changed since the last worker: its connection is not resumed (the guest driver holds the old config); the VM must reconnect its device',
      );
      return undefined;
    }
    return doc;
  }

  /** The inherited fd stored under `name`; a second taker gets a dup (roles may share a file). */
  private take(name: string): number | undefined {
    const fd = this.inherited.get(name)?.[0];
    if (fd === undefined) return undefined;
    if (!this.used.has(fd)) {
      this.used.add(fd);
      return fd;
    }
    const copy = native.dup(fd);
    this.registry.adopt(name, copy);
    return copy;
  }

  private resumeConnection(device: VmpiDevice, server: VhostUserServer, cfg: DeviceConfig, dev: DeviceDoc): void {
    const doc = dev.connection!;
    const taken: number[] = [];
    const fail = (why: string): void => {
      this.stats.resumeFailures++;
      for (const fd of taken) safeClose(fd);
      this.log.error({ vmpiId: cfg.vmpiId, why }, 'cannot resume the front-end connection; the VM must reconnect its device');
    };
    const socket = this.take(doc.socket);
    if (socket === undefined) return fail(`its socket (${doc.socket || 'no name'}) did not come back from the fd store (the front-end may have closed it)`);
    taken.push(socket);
    let state;
    try {
      state = stateFromJSON(doc.state);
      for (const [role, name] of Object.entries(doc.fds)) {
        const fd = this.take(name);
        if (fd === undefined) return fail(`its fd "${role}" (${name || 'no name'}) did not come back from the fd store`);
        taken.push(fd);
        setStateFd(state, role, fd);
      }
      // A packed tx chain held mid-way (its records not yet delivered), and a hand-over's backlog:
      // before its queues come up.
      if (dev.vmpi !== undefined) device.restore(dev.vmpi as VmpiDeviceSnapshot);
      if (device.restoredBacklog > 0) this.log.info({ vmpiId: cfg.vmpiId, sdus: device.restoredBacklog }, 'the backlog the last worker handed over goes to the guest first, once this worker has saved its state');
    } catch (e) {
      return fail(e instanceof StateError ? e.message : errText(e));
    }
    this.resuming = true;
    try {
      server.adopt(socket, state); // closes everything it was given when it fails
    } catch (e) {
      device.reset('the connection could not be resumed'); // the restored records were its guest's
      this.stats.resumeFailures++;
      this.log.error({ vmpiId: cfg.vmpiId, err: errText(e) }, 'cannot resume the front-end connection; the VM must reconnect its device');
      return;
    } finally {
      this.resuming = false;
    }
    this.stats.connectionsResumed++;
  }
}

function connScope(conn: Connection): string {
  return `conn${conn.id}`;
}

function connFds(conn: Connection): number[] {
  return [conn.socketFd, ...stateFds(conn.state).values()];
}
