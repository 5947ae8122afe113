/**
 * native.ts — the typed face of the C++ addon (addon/vmpi_native.cc).
 *
 * Owns: loading the compiled addon and declaring exactly what JavaScript may call. The addon does
 * only what JavaScript cannot: Unix-socket messages with SCM_RIGHTS, mmap/munmap of received fds,
 * eventfd, memfd, uv_poll watchers that wake the event loop when an fd becomes readable (or
 * writable), ioctl with a size-encoded buffer argument (the guest's /dev/vmpiN), and Unix
 * datagrams with fds (systemd's notify socket).
 * Every fd it returns is O_CLOEXEC and (for sockets and eventfds) O_NONBLOCK.
 * Errors are thrown as `Error` with `code` set to the errno name (e.g. "EAGAIN", "EBADF"), `errno`
 * set to the negated errno (as in Node: `util.getSystemErrorName(e.errno)` works) and `syscall` set
 * to the failing call, like Node's own system errors; the message reads
 * "recvmsg failed: EBADF (Bad file descriptor)". Bad arguments throw `TypeError`.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Result of one recvmsg(2): bytes read (0 = peer closed) and the fds that came with them. */
export interface RecvResult {
  bytes: number;
  fds: number[];
}

/** Credentials of a Unix socket's peer (SO_PEERCRED). */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/**
 * Watches one fd with uv_poll; the callback runs on the JS thread (microtasks drain after it, as
 * for any I/O callback). A watcher is created stopped. While started it keeps the event loop
 * alive and keeps itself alive even if JavaScript drops it; once stopped or closed it can be
 * garbage collected. An exception thrown by the callback is an uncaught exception (process
 * 'uncaughtException'); the addon's own failures are passed to the callback as negative numbers.
 * One watcher per fd: creating or starting a second one while another is
 * started throws EEXIST. Close the watcher before closing its fd.
 */
export interface FdWatcher {
  /**
   * Start (or restart) watching. For an eventfd watcher (see `watchEventfd`) the addon reads the
   * counter itself before calling back, so the callback gets the counter value.
   */
  start(): void;
  /** Stop watching; can be started again. */
  stop(): void;
  /** Stop and release the uv handle. Does not close the fd. Idempotent; start() afterwards throws. */
  close(): void;
}

/** A `watchFd` watcher: start() may also change the events watched (on a started watcher too). */
export interface FdEventsWatcher extends FdWatcher {
  /** Start, or re-arm with another mix of UV_READABLE/UV_WRITABLE/UV_DISCONNECT (default: the last one). */
  start(events?: number): void;
}

export interface Native {
  /**
   * socket+bind+listen on a Unix stream socket path; returns the listening fd (non-blocking).
   * Unlinks nothing: an existing path (even a stale socket) throws EADDRINUSE. The file appears
   * at `path` only once the socket listens (bound under a temporary name beside it, then linked);
   * `prepare(name)`, if given, runs before that with the file's name then (to set its owner and
   * mode: it appears with them); if it throws, the socket is closed, its file removed, and the
   * error thrown on.
   */
  listenUnix(path: string, backlog: number, prepare?: (name: string) => void): number;
  /**
   * Connect to a Unix stream socket path; returns the connected fd (non-blocking). Never waits:
   * a listener whose backlog is full fails it at once with EAGAIN (try again later).
   */
  connectUnix(path: string): number;
  /** accept4 on a listening fd; returns the new fd (non-blocking), or -1 when no connection is pending (EAGAIN). */
  accept(listenFd: number): number;
  /**
   * recvmsg into `buf[offset, offset+length)` taking up to `maxFds` (0..253) fds. Returns null on
   * EAGAIN (never blocks). `length` must be >= 1, so `bytes: 0` always means the peer closed.
   * If the kernel truncated the control data (MSG_CTRUNC), or more than `maxFds` fds arrived, every
   * fd received is closed and an error with code "EMSGSIZE" is thrown; the bytes read with them
   * are lost too, so treat it as fatal for the connection.
   */
  recvMsg(fd: number, buf: Uint8Array, offset: number, length: number, maxFds: number): RecvResult | null;
  /**
   * recvMsg(fd, buf, offset, length, 0) for per-message hot paths: the bytes read (0: the peer
   * closed), or -1 on EAGAIN; fds sent with the message are closed and "EMSGSIZE" is thrown, as
   * there. No result object per call.
   */
  recvBytes(fd: number, buf: Uint8Array, offset: number, length: number): number;
  /**
   * sendmsg of `buf[offset, offset+length)` with optional fds (at most 32, SCM_RIGHTS; needs
   * length >= 1). Returns bytes sent, possibly fewer than `length` (the fds went with the first
   * part: send the rest without them); -1 on EAGAIN (never blocks). MSG_NOSIGNAL: no SIGPIPE.
   */
  sendMsg(fd: number, buf: Uint8Array, offset: number, length: number, fds: number[] | null): number;
  /**
   * socketpair(AF_UNIX, SOCK_SEQPACKET), both ends non-blocking and close-on-exec: record
   * boundaries are kept and a full receiver makes sendMsg return -1 (EAGAIN). Note that a 0-byte
   * record reads as `bytes: 0`, like end of file: frame records so that none is empty.
   */
  socketpairSeqpacket(): [number, number];
  /** close(2). Throws on EBADF so double-closes are found, not hidden. EINTR counts as closed. */
  close(fd: number): void;
  /** dup(2) with O_CLOEXEC. */
  dup(fd: number): number;
  /**
   * ioctl(fd, request, buf) for requests that encode direction and argument size (_IOR, _IOW,
   * _IOWR; 0..2^32-1): `buf` must hold at least that size, the kernel reads and/or writes its first
   * bytes. Requests without a size (_IO, legacy numbers like FIONREAD) throw TypeError. Returns
   * the ioctl's (non-negative) result; errors, EAGAIN included, are thrown. Retries on EINTR.
   */
  ioctl(fd: number, request: number, buf: Uint8Array): number;
  /** ioctl(fd, request, NULL) for _IO requests (no direction, no size); others are refused. */
  ioctlNoArg(fd: number, request: number): number;

  /**
   * mmap(fd, offset, length, PROT_READ|PROT_WRITE, MAP_SHARED) returned as an external ArrayBuffer.
   * `offset` must be page-aligned and `length` >= 1. The mapping is released by `munmap` or,
   * failing that, when the ArrayBuffer is garbage collected. The GC is not told about the mapping's
   * size, so large mappings should be munmapped explicitly. Touching pages beyond the end of the
   * file raises SIGBUS: check the size first (and that the file cannot shrink: `fdSeals`).
   * A Node that cannot make an ArrayBuffer that large (Node 20: more than 4 GiB) throws an Error
   * with code "ERR_VMPI_MMAP_TOO_LARGE", the mapping already released.
   */
  mmap(fd: number, offset: number, length: number): ArrayBuffer;
  /**
   * Detach the ArrayBuffer and munmap it now. Idempotent; views on it become zero-length.
   * Throws TypeError for any ArrayBuffer that mmap did not return (they are type-tagged).
   */
  munmap(buffer: ArrayBuffer): void;
  /** memfd_create(name, MFD_CLOEXEC) + ftruncate(size); for test front-ends and tools. */
  memfdCreate(name: string, size: number): number;
  /** System page size. */
  pageSize(): number;

  /** eventfd(initval, EFD_NONBLOCK|EFD_CLOEXEC); initval is 0..2^32-1. */
  eventfd(initval: number): number;
  /**
   * Read and reset an eventfd counter; 0 when it was not signalled (EAGAIN). Never blocks, even
   * on an fd without O_NONBLOCK (the read is RWF_NOWAIT); the watchEventfd reads are the same.
   */
  eventfdRead(fd: number): number;
  /**
   * Add `value` (1..Number.MAX_SAFE_INTEGER) to an eventfd counter. A counter that cannot take
   * `value` (saturated = still signalled) is left as it is: checked with poll first, so even an
   * fd without O_NONBLOCK does not block; EAGAIN is swallowed too.
   */
  eventfdWrite(fd: number, value: number): void;

  /**
   * Watch an fd for readability (level-triggered); `onReadable` gets the UV_READABLE/UV_DISCONNECT
   * bits each time, or -1 on a poll error (e.g. ECONNRESET), after which the watcher is stopped
   * (start() re-arms it). Drain the fd, or stop the watcher, or the callback runs again at once.
   */
  watchReadable(fd: number, onReadable: (events: number) => void): FdWatcher;
  /**
   * Watch an eventfd: on readability the addon reads (resets) the counter, once, and calls back
   * with its value (> 0). A failing read (-EIO for a short read: the fd is not an eventfd) or a
   * poll error stops the watcher and calls back with that negative errno instead; the addon
   * itself never raises. An exception the callback throws is an uncaught exception, as above.
   */
  watchEventfd(fd: number, onSignal: (count: number) => void): FdWatcher;
  /**
   * Watch an fd for any non-empty mix of UV_READABLE, UV_WRITABLE and UV_DISCONNECT
   * (level-triggered; one watcher per fd, so a file that needs both directions uses one watcher
   * and re-arms it with `start(events)`). The callback gets the ready bits, or -1 on a poll error
   * (EPOLLERR), after which the watcher is stopped. Watch UV_WRITABLE only while there is
   * something to write, or the callback runs on every turn of the loop.
   */
  watchFd(fd: number, events: number, onEvents: (events: number) => void): FdEventsWatcher;

  /**
   * One datagram of `buf[offset, offset+length)` (with optional fds, at most 32) to the Unix
   * datagram socket `path`, from a fresh unbound socket; a path starting with '@' is in the
   * abstract namespace. Blocking (a datagram is all or nothing); errors are thrown. This is
   * systemd's notify protocol (src/ops/notify.ts).
   */
  sendDgramUnix(path: string, buf: Uint8Array, offset: number, length: number, fds: number[] | null): number;
  /** A non-blocking Unix datagram socket bound to `path` ('@' = abstract); read it with recvMsg. */
  bindUnixDgram(path: string): number;
  /**
   * getsockopt(SO_PEERCRED) on a connected Unix socket: the pid, uid and gid of the process that
   * connected (as they were at connect()). For the IPC daemon's per-user limits.
   */
  peerCred(fd: number): PeerCred;
  /**
   * Ask for send and receive buffers of at least `bytes` on a socket (SO_SNDBUFFORCE /
   * SO_RCVBUFFORCE when privileged, else SO_SNDBUF / SO_RCVBUF, capped by net.core.wmem_max and
   * rmem_max). Returns the send buffer the kernel granted (Linux reports twice what was asked).
   * A SEQPACKET record larger than the sender's buffer fails with EMSGSIZE.
   */
  setSocketBuffers(fd: number, bytes: number): number;

  // ---- restart (src/ops/restart/) ----
  /** kcmp(KCMP_FILE): true when fds `a` and `b` refer to the same open file description. */
  sameFile(a: number, b: number): boolean;
  /** prctl(PR_SET_PDEATHSIG, signal): this process gets `signal` when its parent dies (0: none). */
  setParentDeathSignal(signal: number): void;
  // ---- checks on fds a peer sent (hardening) ----
  /**
   * Set (default) or clear O_NONBLOCK on `fd`: on its open file description, which whoever sent
   * the fd shares. Clearing it is for tests that play a hostile peer.
   */
  setNonblock(fd: number, nonblock?: boolean): void;
  /**
   * A full memory fence (std::atomic_thread_fence(seq_cst)): the StoreLoad barrier of a
   * shared-memory ring's sleep/wake handshake (dif/ipc/ring.ts). Once per batch, never per SDU.
   */
  fence(): void;
  /** F_GET_SEALS: the F_SEAL_* bits of a memfd/shmem/hugetlbfs file, or -1 if it cannot be sealed. */
  fdSeals(fd: number): number;
  /**
   * memfd_create(name, MFD_CLOEXEC|MFD_ALLOW_SEALING) + ftruncate(size) + F_ADD_SEALS(seals), e.g.
   * F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL as QEMU's memory-backend-memfd (seal=on) does; 0 adds none.
   */
  memfdCreateSealed(name: string, size: number, seals: number): number;
  readonly F_SEAL_SEAL: number;
  readonly F_SEAL_SHRINK: number;
  readonly F_SEAL_GROW: number;
  readonly F_SEAL_WRITE: number;

  /** Poll event bits passed to watchReadable/watchFd callbacks (and to watchFd as the events). */
  readonly UV_READABLE: number;
  readonly UV_WRITABLE: number;
  readonly UV_DISCONNECT: number;
}

function findAddon(): string {
  // Works from src/ (tests, tsx) and from dist/src/ (built CLI).
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'build', 'Release', 'vmpi_native.node');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  throw new Error(
    'vmpi native addon not found (build/Release/vmpi_native.node): run `npm ci` or `npx node-gyp rebuild` in the project root',
  );
}

const require = createRequire(import.meta.url);
export const native: Native = require(findAddon()) as Native;

// ---- AF_PACKET (the shim DIF over Ethernet, src/dif/shim-eth/) ----------------------------------

/** An interface of this network namespace, as packetIfInfo reports it. */
export interface PacketIfInfo {
  index: number;
  /** ARPHRD_* (1: Ethernet). */
  hwType: number;
  mac: Uint8Array;
  mtu: number;
  /** IFF_UP (administratively up) and IFF_RUNNING (carrier). */
  up: boolean;
  running: boolean;
}

export interface NativePacket {
  /**
   * A non-blocking raw AF_PACKET socket (SOCK_RAW: frames whole, Ethernet header included) bound
   * to interface `ifindex`. vlanId -1: it receives untagged frames of `ethertype` (0x0600..0xffff)
   * and frames whose VLAN tag no VLAN device claimed, which arrive with packet type OTHERHOST (3):
   * drop those. vlanId 0..4094: it receives only frames tagged with that VLAN id carrying
   * `ethertype` (a BPF filter over ETH_P_ALL; no 802.1Q support needed in the kernel; the tag is
   * NOT in the received bytes), and never its own outgoing frames. Needs CAP_NET_RAW.
   */
  packetOpen(ifindex: number, ethertype: number, vlanId: number): number;
  /** One whole frame (>= 14 bytes); the bytes sent, or -1 when the device queue is full (EAGAIN, ENOBUFS). */
  packetSend(fd: number, buf: Uint8Array, offset: number, length: number): number;
  /**
   * Frames k = first..first+count-1 (count 1..PACKET_MAX_BATCH), each buf[offsets[k],
   * offsets[k]+lengths[k]) and at least 14 bytes, in one sendmmsg. Returns how many were sent
   * (>= 1), or 0 when the device queue is full (EAGAIN, ENOBUFS) before the first. An error on
   * the first frame is thrown (ENETDOWN); one on a later frame ends the batch there (it comes
   * back on the next call, which starts with that frame).
   */
  packetSendBatch(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, first: number, count: number): number;
  /**
   * Up to `maxFrames` (1..PACKET_MAX_BATCH) frames in one recvmmsg: frame i in
   * buf[i*slotBytes, i*slotBytes + min(meta[2i], slotBytes)); meta[2i] is its full length (above
   * slotBytes: cut, drop it), meta[2i+1] its packet type (0 host, 1 broadcast, 2 multicast,
   * 3 other host, 4 outgoing). Returns the count, 0 when nothing waits. A socket error (ENETDOWN:
   * the interface went down) is thrown once; the socket keeps working when the interface is up again.
   */
  packetRecvBatch(fd: number, buf: Uint8Array, slotBytes: number, maxFrames: number, meta: Int32Array): number;
  /** Index, MAC, MTU and flags of interface `name`; ENODEV when there is none. */
  packetIfInfo(name: string): PacketIfInfo;
  readonly PACKET_MAX_BATCH: number;
}
// Merged into Native above (declaration merging keeps this section apart from the others).
export interface Native extends NativePacket {}

// ---- batched records: sendmmsg/recvmmsg (the IPC daemon's flow sockets, src/dif/ipc/record.ts) ----

/**
 * Many SOCK_SEQPACKET records per system call and per call into the addon, between a socket and
 * one caller-provided buffer (nothing allocated per record). Never block (MSG_DONTWAIT).
 */
export interface RecordsNative {
  /**
   * sendmmsg of records k = first .. first+count-1 (count 1..256), record k being
   * `buf[offsets[k], offsets[k] + lengths[k])` (0-byte records too). Returns how many were sent
   * (≥ 1; fewer than `count` when the socket filled up or a later record failed: that error comes
   * back on the next call, which starts there), -1 when the first record met EAGAIN. An error on
   * the first record is thrown (EPIPE when the peer closed, EMSGSIZE when it is larger than the
   * send buffer can ever carry). MSG_NOSIGNAL: no SIGPIPE.
   */
  sendRecords(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, first: number, count: number): number;
  /**
   * recvmmsg of up to `max` records (1..256), record k into `buf[k*slot, (k+1)*slot)`
   * (`buf` must hold max*slot bytes). Returns how many arrived (≥ 1), -1 when none was queued.
   * `lengths[k]`: the record's length; 0 = a 0-byte record, or end of file (once the peer closed,
   * every further entry is 0: frame records so that none is empty); more than `slot` = the record
   * was longer than its slot and was cut (MSG_TRUNC: never to be taken as whole); -1 = fds came
   * with it (closed by the kernel, the bytes are there). Every record counted has left the socket.
   */
  recvRecords(fd: number, buf: Uint8Array, slot: number, max: number, lengths: Int32Array): number;
}

/** The batched-record calls of the addon (the same module as `native`). */
export const records: RecordsNative = native as unknown as RecordsNative;
