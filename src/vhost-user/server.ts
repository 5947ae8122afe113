/**
 * server.ts — a vhost-user listening socket and the connections accepted on it.
 *
 * Owns: creating (or inheriting, for systemd socket activation) the listening Unix socket,
 * clearing a stale socket file left by a dead server (but never one another server still listens
 * on), accepting front-ends, creating one device per connection through the given factory, and
 * limiting how many front-ends may be connected at once (a VMPI device serves one VM: default 1).
 * Many servers live in one process, one per socket; they share nothing.
 */
import { EventEmitter } from 'node:events';
import { unlinkSync } from 'node:fs';
import { AcceptBackoff } from '../sys/accept-backoff.js';
import { logger as rootLogger, ThrottledLog, type Logger } from '../sys/log.js';
import { errText } from '../sys/fd.js';
import { native, type FdWatcher } from '../sys/native.js';
import { removeStaleSocket } from '../sys/unix-socket.js';
import { Connection, type ConnectionOptions, type DisconnectCause } from './connection.js';
import { FrontendGate } from './frontend-gate.js';
import type { ConnectionState } from './state.js';
import type { VhostUserDevice } from './device.js';

export interface ServerOptions {
  /** Socket path to create. At least one of `path` and `listenFd` must be given. */
  path?: string;
  /**
   * An already-listening socket fd (systemd socket activation: fd 3 onwards; or the same
   * server's socket kept across a restart, with `path` naming its file, removed on close()).
   */
  listenFd?: number;
  /**
   * Runs once the socket listens, before its file takes `path`, with the file's name then: set
   * its owner and mode there, so it appears with them (native.listenUnix). Throwing fails listen().
   */
  prepareSocket?: (name: string) => void;
  /** Makes the device for a newly accepted front-end. */
  createDevice: (connectionId: number) => VhostUserDevice;
  /** Front-ends allowed at once; further ones are accepted and closed with a log line. Default 1. */
  maxConnections?: number;
  /**
   * Accept guest memory fds that are not sealed against shrinking (see memory.ts): only for
   * trusted front-ends. Default false.
   */
  allowUnsealedMemory?: boolean;
  /** Bytes of guest memory one front-end may have mapped (default 4 TiB; see memory.ts). */
  maxMappedBytes?: number;
  /** Bytes of replies one front-end may leave unread before it is disconnected (endpoint.ts). */
  outputBudget?: number;
  /** Requests one connection handles per event-loop turn before the others get theirs (endpoint.ts). */
  messagesPerTurn?: number;
  /**
   * Misbehaving connections (a request rejected, a protocol or internal error) this socket may
   * have per second on average, and in a burst, before it stops accepting for a while
   * (frontend-gate.ts). Defaults 20 and 20; `Infinity` turns the gate off.
   */
  misbehaviourRate?: number;
  misbehaviourBurst?: number;
  /** After each request changed a connection's state, before its reply (restart: persist now). */
  commit?: (conn: Connection, received: readonly number[]) => void;
  logger?: Logger;
}

export interface ServerEvents {
  connection: [conn: Connection];
  disconnect: [conn: Connection, reason: string, cause: DisconnectCause];
  /** A request refused with a failed REPLY_ACK on a connection that stays up. */
  rejected: [conn: Connection, request: string, message: string];
}

export class ServerError extends Error {
  override name = 'ServerError';
}

export class VhostUserServer extends EventEmitter<ServerEvents> {
  readonly connections = new Set<Connection>();
  readonly path: string | undefined;
  private listenFd = -1;
  private watcher: FdWatcher | null = null;
  private readonly log: Logger;
  private readonly maxConnections: number;
  private readonly acceptBackoff: AcceptBackoff;
  private readonly gate: FrontendGate;
  private readonly gateLog: ThrottledLog;
  private gateTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: ServerOptions) {
    super();
    if (opts.path === undefined && opts.listenFd === undefined) {
      throw new ServerError('give `path` (socket to create) or `listenFd` (inherited socket)');
    }
    this.path = opts.path;
    this.maxConnections = opts.maxConnections ?? 1;
    this.log = (opts.logger ?? rootLogger).child({ socket: opts.path ?? `fd:${String(opts.listenFd)}` });
    this.gate = new FrontendGate({ rate: opts.misbehaviourRate, burst: opts.misbehaviourBurst });
    this.gateLog = new ThrottledLog(this.log, 'front-ends of this socket misbehave faster than allowed; accepting paused');
    // Out of fds, the front-end stays in the backlog: pause instead of spinning on it, so QEMU's
    // requests on the connections already open keep being answered.
    this.acceptBackoff = new AcceptBackoff({
      log: new ThrottledLog(this.log, 'accept failed; backing off'),
      pause: () => this.watcher?.stop(),
      retry: () => this.resumeAccepting(),
    });
  }

  /** accept(2) failures since start (EMFILE, ENFILE …), each followed by a pause. */
  get acceptErrors(): number {
    return this.acceptBackoff.failures;
  }

  /** Connections that misbehaved (charged to the socket's gate), and the accept pauses they caused. */
  get misbehaviour(): { connections: number; pauses: number } {
    return { connections: this.gate.charged, pauses: this.gate.pauses };
  }

  /** Start listening and accepting. */
  listen(): this {
    if (this.listenFd >= 0) return this;
    if (this.opts.listenFd !== undefined) {
      this.listenFd = this.opts.listenFd;
    } else {
      const path = this.opts.path!;
      try {
        removeStaleSocket(path, 'another server');
      } catch (e) {
        throw new ServerError(errText(e));
      }
      // prepareSocket's own error goes on as it said it; the socket's are wrapped.
      const prepare = this.opts.prepareSocket;
      let prepareError: unknown = undefined;
      const prepared =
        prepare &&
        ((name: string): void => {
          try {
            prepare(name);
          } catch (e) {
            prepareError = e;
            throw e;
          }
        });
      try {
        this.listenFd = native.listenUnix(path, 16, prepared);
      } catch (e) {
        if (prepareError !== undefined && e === prepareError) throw e;
        throw new ServerError(`cannot listen on ${path}: ${(e as Error).message}`);
      }
    }
    this.watcher = native.watchReadable(this.listenFd, () => this.acceptGuarded());
    this.watcher.start();
    this.log.info('listening for vhost-user front-ends');
    return this;
  }

  /** A pause (accept back-off or the gate) is over: watch the socket again and take what waits. */
  private resumeAccepting(): void {
    if (!this.watcher) return; // closed meanwhile
    this.watcher.start();
    this.acceptGuarded();
  }

  private acceptGuarded(): void {
    try {
      this.acceptAll();
    } catch (e) {
      // Never the process: a 'connection' listener or a device factory that throws costs that
      // one front-end (closed in acceptAll), and accepting goes on at the next readiness.
      this.log.error({ err: (e as Error)?.message ?? String(e) }, 'error while accepting front-ends');
    }
  }

  private acceptAll(): void {
    if (this.gateTimer) {
      this.watcher?.stop(); // e.g. an accept backoff's retry restarted it: the gate's timer restarts it
      return;
    }
    for (;;) {
      const wait = this.gate.waitMs();
      if (wait > 0) {
        this.pauseForGate(wait);
        return;
      }
      let fd: number;
      try {
        fd = native.accept(this.listenFd);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ECONNABORTED' || code === 'EPROTO') continue; // that one front-end is gone
        this.acceptBackoff.failed(e);
        return;
      }
      if (fd < 0) return;
      this.acceptBackoff.succeeded();
      if (this.connections.size >= this.maxConnections) {
        this.log.warn({ max: this.maxConnections }, 'refusing front-end: this socket already serves its maximum number of front-ends');
        native.close(fd);
        continue;
      }
      let conn: Connection;
      try {
        conn = new Connection(fd, this.opts.createDevice(this.connections.size), this.log, this.connectionOptions());
      } catch (e) {
        this.log.error({ err: (e as Error).message }, 'cannot set up connection');
        native.close(fd);
        continue;
      }
      this.track(conn);
    }
  }

  /** Stop accepting for `ms` (the gate is empty); what connects meanwhile waits in the backlog. */
  private pauseForGate(ms: number): void {
    this.watcher?.stop();
    this.gateLog.warn({ waitMs: ms, rate: this.gate.rate, burst: this.gate.burst, misbehaving: this.gate.charged });
    this.gateTimer = setTimeout(() => {
      this.gateTimer = null;
      this.resumeAccepting();
    }, ms);
    this.gateTimer.unref?.();
  }

  /**
   * Resume a front-end connection another process of this server served (restart): `fd` is its
   * socket and `state` what was negotiated, with this process's fds in it. Throws
   * ConnectionError 'resume_failed' when it cannot be resumed; every fd given is closed then.
   */
  adopt(fd: number, state: ConnectionState): Connection {
    const conn = new Connection(fd, this.opts.createDevice(this.connections.size), this.log, { ...this.connectionOptions(), resume: state });
    this.track(conn);
    return conn;
  }

  private connectionOptions(): ConnectionOptions {
    return {
      allowUnsealedMemory: this.opts.allowUnsealedMemory,
      maxMappedBytes: this.opts.maxMappedBytes,
      outputBudget: this.opts.outputBudget,
      messagesPerTurn: this.opts.messagesPerTurn,
      commit: this.opts.commit,
    };
  }

  private track(conn: Connection): void {
    this.connections.add(conn);
    let charged = false;
    const charge = (): void => {
      if (charged) return;
      charged = true;
      this.gate.charge();
    };
    conn.once('close', (reason, cause) => {
      this.connections.delete(conn);
      if (cause === 'protocol_error' || cause === 'internal_error') charge();
      this.emit('disconnect', conn, reason, cause);
    });
    conn.on('rejected', (request, message) => {
      charge();
      this.emit('rejected', conn, request, message);
    });
    try {
      this.emit('connection', conn);
    } catch (e) {
      this.log.error({ err: (e as Error)?.message ?? String(e) }, "a 'connection' listener failed; closing that front-end");
      conn.close(`internal error in a 'connection' listener: ${(e as Error)?.message ?? String(e)}`, 'internal_error');
    }
  }

  private clearGateTimer(): void {
    if (this.gateTimer) clearTimeout(this.gateTimer);
    this.gateTimer = null;
  }

  /** The listening socket's fd (-1 before listen()): the restart code keeps a copy of it. */
  get listeningFd(): number {
    return this.listenFd;
  }

  /**
   * Forget everything without telling anyone: no close of a connection, no unlink of the socket
   * (the process hands over to a new one, which holds copies of every fd). The process exits next.
   */
  abandon(): void {
    this.acceptBackoff.close();
    this.clearGateTimer();
    this.watcher?.close();
    this.watcher = null;
    for (const c of this.connections) c.abandon();
    this.connections.clear();
  }

  /** Stop listening, close every connection, and remove the socket file we created. */
  close(): void {
    this.acceptBackoff.close();
    this.clearGateTimer();
    this.watcher?.close();
    this.watcher = null;
    for (const c of [...this.connections]) c.close('server shutting down');
    if (this.listenFd >= 0) {
      native.close(this.listenFd);
      this.listenFd = -1;
      if (this.path) {
        try {
          unlinkSync(this.path);
        } catch {
          // already gone
        }
      }
    }
  }
}

