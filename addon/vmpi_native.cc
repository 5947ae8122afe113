// vmpi_native.cc — the native half of src/native.ts (which is the contract; keep the two in step).
//
// Owns exactly what JavaScript cannot do itself:
//   * Unix stream sockets with SCM_RIGHTS fd passing (listen/connect/accept/recvmsg/sendmsg),
//     close and dup;
//   * mmap of shared fds as external ArrayBuffers, with explicit munmap (detach + unmap now) and a
//     finalizer that unmaps whatever JavaScript forgot;
//   * eventfd and memfd creation and counter I/O;
//   * FdWatcher: a uv_poll_t on the Node event loop that calls JavaScript when an fd is readable
//     (or, for eventfds, reads the counter first and passes its value), or, for watchFd, on any
//     chosen mix of readable/writable;
//   * ioctl with a buffer argument whose size the request number encodes (the guest's /dev/vmpiN);
//   * Unix datagrams with SCM_RIGHTS to a path or abstract name (systemd's sd_notify protocol).
// Rules kept throughout: every fd created here is O_CLOEXEC (and O_NONBLOCK for sockets and
// eventfds); no fd leaks on any error path (UniqueFd / FdList guards); arguments are validated with
// TypeError; system errors are Error objects with code (errno name), errno (negative, as in Node),
// syscall, and a message "<syscall> failed: <CODE> (<description>)".

#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace {

constexpr double kMaxSafeInt = 9007199254740991.0;  // Number.MAX_SAFE_INTEGER
constexpr int kMaxSendFds = 32;
constexpr int kMaxRecvFds = 253;  // SCM_MAX_FD: the kernel never passes more in one message

// ---- errors ----------------------------------------------------------------------------------

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#define VMPI_HAVE_STRERRORNAME 1
#endif

// glibc >= 2.32 knows every errno by name; elsewhere libuv's table covers the common ones.
std::string ErrnoName(int err) {
#ifdef VMPI_HAVE_STRERRORNAME
  if (const char* name = strerrorname_np(err)) return name;
#endif
  char buf[64];
  return uv_err_name_r(-err, buf, sizeof buf);
}

std::string ErrnoDescription(int err) {
#ifdef VMPI_HAVE_STRERRORNAME
  if (const char* desc = strerrordesc_np(err)) return desc;
#endif
  char buf[128];
  return uv_strerror_r(-err, buf, sizeof buf);
}

Napi::Error SysError(Napi::Env env, const char* syscall, int err, const std::string& detail = "") {
  std::string msg = std::string(syscall) + " failed: " + ErrnoName(err) + " (" + ErrnoDescription(err) + ")";
  if (!detail.empty()) msg += ": " + detail;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Value().Set("code", ErrnoName(err));
  e.Value().Set("errno", -err);
  e.Value().Set("syscall", syscall);
  return e;
}

[[noreturn]] void ThrowSys(Napi::Env env, const char* syscall, int err, const std::string& detail = "") {
  throw SysError(env, syscall, err, detail);
}

// ---- fd guards -------------------------------------------------------------------------------

class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { if (fd_ >= 0) ::close(fd_); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int release() { int fd = fd_; fd_ = -1; return fd; }
 private:
  int fd_;
};

// Received fds: closed on destruction unless released (i.e. handed to JavaScript).
struct FdList {
  std::vector<int> fds;
  ~FdList() { for (int fd : fds) ::close(fd); }
};

// ---- argument validation ---------------------------------------------------------------------

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* fn) : info_(info), fn_(fn) {}
  Napi::Env Env() const { return info_.Env(); }
  const Napi::CallbackInfo& Info() const { return info_; }

  [[noreturn]] void Fail(const std::string& what) const {
    throw Napi::TypeError::New(info_.Env(), std::string(fn_) + ": " + what);
  }

  double Int(size_t i, const char* name, double min, double max) const {
    Napi::Value v = info_[i];
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d) || std::trunc(d) != d || d < min || d > max) {
      char range[96];
      snprintf(range, sizeof range, "[%.0f, %.0f]", min, max);
      Fail(std::string(name) + " must be an integer in " + range);
    }
    return d;
  }
  int Fd(size_t i, const char* name = "fd") const { return static_cast<int>(Int(i, name, 0, INT_MAX)); }

  std::string Str(size_t i, const char* name, size_t maxLen) const {
    if (!info_[i].IsString()) Fail(std::string(name) + " must be a string");
    std::string s = info_[i].As<Napi::String>().Utf8Value();
    if (s.empty() || s.size() > maxLen || s.find('\0') != std::string::npos)
      Fail(std::string(name) + " must be 1.." + std::to_string(maxLen) + " bytes without NUL");
    return s;
  }

  Napi::Uint8Array Bytes(size_t i, const char* name) const {
    Napi::Value v = info_[i];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      Fail(std::string(name) + " must be a Uint8Array");
    return v.As<Napi::Uint8Array>();
  }

  Napi::Function Fn(size_t i, const char* name) const {
    if (!info_[i].IsFunction()) Fail(std::string(name) + " must be a function");
    return info_[i].As<Napi::Function>();
  }

  // buf, offset, length at i, i+1, i+2; returns the slice [offset, offset+length).
  uint8_t* Slice(size_t i, size_t minLen, size_t* len) const {
    Napi::Uint8Array buf = Bytes(i, "buf");
    double size = static_cast<double>(buf.ByteLength());
    double off = Int(i + 1, "offset", 0, size);
    *len = static_cast<size_t>(Int(i + 2, "length", static_cast<double>(minLen), size - off));
    return buf.Data() + static_cast<size_t>(off);
  }

  sockaddr_un UnixPath(size_t i) const {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string path = Str(i, "path", sizeof(addr.sun_path) - 1);
    memcpy(addr.sun_path, path.data(), path.size());
    return addr;
  }

 private:
  const Napi::CallbackInfo& info_;
  const char* fn_;
};

// ---- sockets ---------------------------------------------------------------------------------

// A private name beside `path` (same directory, so link(2) stays on one file system), or false
// when it would not fit in sun_path.
bool TempSocketName(const sockaddr_un& addr, sockaddr_un* tmp) {
  static std::atomic<unsigned> counter{0};
  const char* path = addr.sun_path;
  const char* slash = strrchr(path, '/');
  size_t dirLen = slash ? static_cast<size_t>(slash - path) + 1 : 0;
  char name[64];
  int n = snprintf(name, sizeof name, ".vmpi-listen-%ld-%u", static_cast<long>(getpid()), counter++);
  if (n < 0 || dirLen + static_cast<size_t>(n) >= sizeof(tmp->sun_path)) return false;
  *tmp = sockaddr_un{};
  tmp->sun_family = AF_UNIX;
  memcpy(tmp->sun_path, path, dirLen);
  memcpy(tmp->sun_path + dirLen, name, static_cast<size_t>(n));
  return true;
}

// An errno of bind(2) or link(2) that says the path or its directory is the problem: binding
// `path` itself would fail alike, so it is thrown rather than tried.
bool PathProblem(int err) {
  return err == ENOENT || err == ENOTDIR || err == EACCES || err == EROFS || err == ENAMETOOLONG || err == ELOOP;
}

// The socket file appears at `path` only once the socket listens: it is bound and listening under
// a temporary name first, then linked to `path` (link(2) fails on an existing path, as bind
// does). A client that polls for the file (a test, a provisioning script, QEMU started a moment
// after the server) can never find it there and be refused in the instant between bind and
// listen. Where the temporary name does not fit or the file system cannot link, it binds `path`
// directly, as before. `prepare` (optional): called with the file's current name once the socket
// listens and before it takes `path` (JS sets owner and mode there, so the file appears with
// them); if it throws, the socket is closed, its file removed, and the exception goes on.
Napi::Value ListenUnix(const Napi::CallbackInfo& info) {
  Args a(info, "listenUnix");
  sockaddr_un addr = a.UnixPath(0);
  int backlog = static_cast<int>(a.Int(1, "backlog", 0, INT_MAX));
  bool hasPrepare = info.Length() > 2 && !info[2].IsUndefined();
  Napi::Function prepare = hasPrepare ? a.Fn(2, "prepare") : Napi::Function();
  auto prepared = [&](const char* name) {
    if (!hasPrepare) return;
    try {
      prepare.Call({Napi::String::New(a.Env(), name)});
    } catch (...) {
      unlink(name);
      throw;
    }
  };
  sockaddr_un tmp;
  if (TempSocketName(addr, &tmp)) {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) ThrowSys(a.Env(), "socket", errno);
    unlink(tmp.sun_path);  // a crashed process with this pid may have left it
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&tmp), sizeof tmp) == 0) {
      if (listen(fd.get(), backlog) < 0) {
        int err = errno;
        unlink(tmp.sun_path);
        ThrowSys(a.Env(), "listen", err);
      }
      prepared(tmp.sun_path);
      int r = link(tmp.sun_path, addr.sun_path);
      int err = errno;
      unlink(tmp.sun_path);
      if (r == 0) return Napi::Number::New(a.Env(), fd.release());
      // An existing path (stale socket or not) gives EADDRINUSE: what to do about it is JS policy.
      if (err == EEXIST) ThrowSys(a.Env(), "bind", EADDRINUSE);
      if (PathProblem(err)) ThrowSys(a.Env(), "bind", err);
      // EPERM, EXDEV, ENOSYS …: this file system does not link sockets; bind `path` itself.
    } else if (PathProblem(errno)) {
      ThrowSys(a.Env(), "bind", errno);
    }
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) ThrowSys(a.Env(), "socket", errno);
  // An existing path (stale socket or not) gives EADDRINUSE: what to do about it is JS policy.
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) ThrowSys(a.Env(), "bind", errno);
  if (listen(fd.get(), backlog) < 0) {
    int err = errno;
    unlink(addr.sun_path);  // we created it a moment ago
    ThrowSys(a.Env(), "listen", err);
  }
  prepared(addr.sun_path);
  return Napi::Number::New(a.Env(), fd.release());
}

Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  Args a(info, "connectUnix");
  sockaddr_un addr = a.UnixPath(0);
  // Non-blocking from the start: a Unix-socket connect never waits in progress, it either
  // connects or fails at once, with EAGAIN when the listener's backlog is full. A blocking one
  // would freeze the event loop for as long as a stuck peer does not accept.
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) ThrowSys(a.Env(), "socket", errno);
  int r;
  do r = connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr); while (r < 0 && errno == EINTR);
  if (r < 0) ThrowSys(a.Env(), "connect", errno);
  return Napi::Number::New(a.Env(), fd.release());
}

Napi::Value Accept(const Napi::CallbackInfo& info) {
  Args a(info, "accept");
  int lfd = a.Fd(0, "listenFd");
  int fd;
  do fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(a.Env(), -1);
    ThrowSys(a.Env(), "accept4", errno);
  }
  return Napi::Number::New(a.Env(), fd);
}

Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  Args a(info, "recvMsg");
  Napi::Env env = a.Env();
  int fd = a.Fd(0);
  size_t len;
  uint8_t* data = a.Slice(1, 1, &len);  // length 0 would be indistinguishable from EOF
  int maxFds = static_cast<int>(a.Int(4, "maxFds", 0, kMaxRecvFds));

  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxRecvFds)];
  iovec iov{data, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = maxFds > 0 ? control : nullptr;
  msg.msg_controllen = maxFds > 0 ? CMSG_SPACE(sizeof(int) * maxFds) : 0;
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowSys(env, "recvmsg", errno);
  }
  FdList got;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* p = CMSG_DATA(c);
    for (size_t k = 0; k < count; k++) {
      int rfd;
      memcpy(&rfd, p + k * sizeof(int), sizeof rfd);
      got.fds.push_back(rfd);
    }
  }
  // CMSG_SPACE rounds up, so the kernel may fit more than maxFds without truncating: both cases
  // are the peer breaking the protocol. The bytes read are lost with the fds (~FdList closes them).
  if (msg.msg_flags & MSG_CTRUNC)
    ThrowSys(env, "recvmsg", EMSGSIZE, "control data truncated (more than maxFds=" + std::to_string(maxFds) + " fds)");
  if (got.fds.size() > static_cast<size_t>(maxFds))
    ThrowSys(env, "recvmsg", EMSGSIZE, std::to_string(got.fds.size()) + " fds received, maxFds=" + std::to_string(maxFds));

  Napi::Array fds = Napi::Array::New(env, got.fds.size());
  for (size_t k = 0; k < got.fds.size(); k++) fds.Set(static_cast<uint32_t>(k), got.fds[k]);
  Napi::Object result = Napi::Object::New(env);
  result.Set("bytes", static_cast<double>(n));
  result.Set("fds", fds);
  got.fds.clear();  // handed to JavaScript
  return result;
}

// recvMsg with maxFds = 0 for the per-SDU paths (a flow socket's records): the same recvmsg and
// the same refusal of fds (MSG_CTRUNC: the kernel closed them; EMSGSIZE), but the result is a
// number, -1 on EAGAIN, so a record costs no result object, fd array or property names.
Napi::Value RecvBytes(const Napi::CallbackInfo& info) {
  Args a(info, "recvBytes");
  Napi::Env env = a.Env();
  int fd = a.Fd(0);
  size_t len;
  uint8_t* data = a.Slice(1, 1, &len);  // length 0 would be indistinguishable from EOF
  iovec iov{data, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowSys(env, "recvmsg", errno);
  }
  if (msg.msg_flags & MSG_CTRUNC) ThrowSys(env, "recvmsg", EMSGSIZE, "control data truncated (fds sent where none are taken; they were closed)");
  return Napi::Number::New(env, static_cast<double>(n));
}

// The fds argument of sendMsg/sendDgramUnix (null or an array of at most kMaxSendFds fds) into
// fds[]; returns how many.
int SendFds(const Args& a, size_t i, int (&fds)[kMaxSendFds]) {
  const Napi::Value arg = a.Info()[i];
  if (arg.IsNull() || arg.IsUndefined()) return 0;
  if (!arg.IsArray()) a.Fail("fds must be an array of fds or null");
  Napi::Array arr = arg.As<Napi::Array>();
  if (arr.Length() > kMaxSendFds) a.Fail("at most " + std::to_string(kMaxSendFds) + " fds per message");
  int nfds = static_cast<int>(arr.Length());
  for (int k = 0; k < nfds; k++) {
    Napi::Value v = arr[static_cast<uint32_t>(k)];
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= INT_MAX && std::trunc(d) == d)) a.Fail("fds[" + std::to_string(k) + "] is not an fd");
    fds[k] = static_cast<int>(d);
  }
  return nfds;
}

// One SCM_RIGHTS control message with fds[0..nfds) on msg (nothing when nfds is 0).
void AttachRights(msghdr* msg, char* control, size_t controlSize, const int* fds, int nfds) {
  if (nfds <= 0) return;
  memset(control, 0, controlSize);
  msg->msg_control = control;
  msg->msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
  cmsghdr* c = CMSG_FIRSTHDR(msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
}

Napi::Value SendMsg(const Napi::CallbackInfo& info) {
  Args a(info, "sendMsg");
  Napi::Env env = a.Env();
  int fd = a.Fd(0);
  size_t len;
  uint8_t* data = a.Slice(1, 0, &len);
  int fds[kMaxSendFds];
  int nfds = SendFds(a, 4, fds);
  // Linux drops ancillary data sent with zero bytes on a stream socket.
  if (nfds > 0 && len == 0) a.Fail("length must be >= 1 when sending fds");

  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxSendFds)];
  iovec iov{data, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  AttachRights(&msg, control, sizeof control, fds, nfds);
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowSys(env, "sendmsg", errno);
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// socketpair(AF_UNIX, SOCK_SEQPACKET) for the IPC daemon's per-flow data path (src/dif/ipc/):
// record boundaries are kept, and a full receive queue makes the writer see EAGAIN.
Napi::Value SocketpairSeqpacket(const Napi::CallbackInfo& info) {
  Args a(info, "socketpairSeqpacket");
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) ThrowSys(a.Env(), "socketpair", errno);
  Napi::Array out = Napi::Array::New(a.Env(), 2);
  out.Set(0u, static_cast<double>(sv[0]));
  out.Set(1u, static_cast<double>(sv[1]));
  return out;
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  Args a(info, "close");
  // EINTR from close(2) on Linux still means the fd is gone; retrying could close someone else's.
  if (::close(a.Fd(0)) < 0 && errno != EINTR) ThrowSys(a.Env(), "close", errno);
  return a.Env().Undefined();
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  Args a(info, "dup");
  int fd = fcntl(a.Fd(0), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) ThrowSys(a.Env(), "dup", errno);
  return Napi::Number::New(a.Env(), fd);
}

// ioctl(fd, request, buf): only for requests that encode their argument size (_IOR/_IOW/_IOWR),
// so the kernel never touches more than buf holds; legacy numbers (FIONREAD, ...) are refused.
Napi::Value Ioctl(const Napi::CallbackInfo& info) {
  Args a(info, "ioctl");
  int fd = a.Fd(0);
  unsigned long request = static_cast<unsigned long>(a.Int(1, "request", 0, 4294967295.0));
  size_t size = _IOC_SIZE(request);
  if (_IOC_DIR(request) == _IOC_NONE || size == 0)
    a.Fail("request must encode a direction and an argument size (_IOR/_IOW/_IOWR)");
  Napi::Uint8Array buf = a.Bytes(2, "buf");
  if (buf.ByteLength() < size)
    a.Fail("buf must hold at least " + std::to_string(size) + " bytes (the size the request encodes)");
  int r;
  do r = ::ioctl(fd, request, buf.Data()); while (r < 0 && errno == EINTR);
  if (r < 0) ThrowSys(a.Env(), "ioctl", errno);
  return Napi::Number::New(a.Env(), r);
}

// ioctlNoArg(fd, request): for _IO requests (no direction, no size), such as VMPI_IOC_SHUTDOWN.
// The argument is NULL, so a request that does expect a pointer fails with EFAULT instead of
// touching memory.
Napi::Value IoctlNoArg(const Napi::CallbackInfo& info) {
  Args a(info, "ioctlNoArg");
  int fd = a.Fd(0);
  unsigned long request = static_cast<unsigned long>(a.Int(1, "request", 0, 4294967295.0));
  if (_IOC_DIR(request) != _IOC_NONE || _IOC_SIZE(request) != 0)
    a.Fail("request must be an _IO request (no direction, no argument size); use ioctl() with a buffer");
  int r;
  do r = ::ioctl(fd, request, nullptr); while (r < 0 && errno == EINTR);
  if (r < 0) ThrowSys(a.Env(), "ioctl", errno);
  return Napi::Number::New(a.Env(), r);
}

// ---- IPC daemon credentials and socket buffers (src/dif/ipc/) --------------------------------
// Kept apart: what the IPC daemon needs to know who is connected (SO_PEERCRED) and to size a
// flow socket's buffers to its max SDU (a SEQPACKET record larger than the sender's SO_SNDBUF
// fails with EMSGSIZE).

// getsockopt(SO_PEERCRED): {pid, uid, gid} of the process that connected (as of connect()).
Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Args a(info, "peerCred");
  int fd = a.Fd(0);
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) ThrowSys(a.Env(), "getsockopt", errno);
  Napi::Object out = Napi::Object::New(a.Env());
  out.Set("pid", static_cast<double>(cred.pid));
  out.Set("uid", static_cast<double>(cred.uid));
  out.Set("gid", static_cast<double>(cred.gid));
  return out;
}

// Ask for SO_SNDBUF and SO_RCVBUF of at least `bytes` (SO_*BUFFORCE first: it passes
// net.core.[wr]mem_max with CAP_NET_ADMIN; else the plain option, capped by the sysctl).
// Returns the send buffer size the kernel granted (as getsockopt reports it).
Napi::Value SetSocketBuffers(const Napi::CallbackInfo& info) {
  Args a(info, "setSocketBuffers");
  int fd = a.Fd(0);
  int bytes = static_cast<int>(a.Int(1, "bytes", 1, INT_MAX / 2));
  const int opts[2][2] = {{SO_SNDBUFFORCE, SO_SNDBUF}, {SO_RCVBUFFORCE, SO_RCVBUF}};
  for (const auto& o : opts) {
    if (setsockopt(fd, SOL_SOCKET, o[0], &bytes, sizeof bytes) == 0) continue;
    if (errno != EPERM && errno != ENOPROTOOPT) ThrowSys(a.Env(), "setsockopt", errno);
    if (setsockopt(fd, SOL_SOCKET, o[1], &bytes, sizeof bytes) < 0) ThrowSys(a.Env(), "setsockopt", errno);
  }
  int got = 0;
  socklen_t len = sizeof got;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &len) < 0) ThrowSys(a.Env(), "getsockopt", errno);
  return Napi::Number::New(a.Env(), got);
}
// ---- end of the IPC daemon block -------------------------------------------------------------

// ---- memory ----------------------------------------------------------------------------------
//
// Each mapping has a heap Mapping, which is the finalize hint of its external ArrayBuffer. munmap()
// finds it by the buffer's data pointer, detaches the buffer, unmaps, marks it unmapped and drops
// it from the table at once (so a new mapping at the same address is never confused with it).
// The finalizer runs later in either case (Node calls it when the backing store is released, on
// the JS thread via SetImmediate) and unmaps only if munmap() did not.
//
// napi_create_external_arraybuffer may fail after it has taken the finalizer: Node 20 refuses
// more than 4 GiB (kMaxLength) and calls the finalizer at once, a later Node may call it later or
// never. So a Mapping has two owners, the finalizer and mmap()'s error path: each unmaps it if not
// yet unmapped and drops its reference; the last one frees it (see ReleaseMapping). A Mapping
// whose finalizer Node never calls costs its few bytes, never a second munmap or free.

struct Mapping {
  void* ptr;
  size_t len;
  bool unmapped;
  int refs;  // under g_mappings_mu
};

// Tags the ArrayBuffers mmap() returns, so munmap() can reject others even once detached.
constexpr napi_type_tag kMappingTag = {0x766d70695f6d6d61ULL, 0x705f627566666572ULL};

std::mutex g_mappings_mu;  // finalizers and munmap of different worker threads share the table
std::unordered_map<void*, Mapping*> g_mappings;

// Drops one owner's reference: forgets the table entry (if it is still this mapping), unmaps
// unless already unmapped, and frees the Mapping when no owner is left.
void ReleaseMapping(Mapping* m) {
  bool unmap, last;
  {
    std::lock_guard<std::mutex> lock(g_mappings_mu);
    auto it = g_mappings.find(m->ptr);
    if (it != g_mappings.end() && it->second == m) g_mappings.erase(it);
    unmap = !m->unmapped;
    m->unmapped = true;
    last = --m->refs == 0;
  }
  if (unmap) ::munmap(m->ptr, m->len);
  if (last) delete m;
}

void FinalizeMapping(napi_env /*env*/, void* /*data*/, void* hint) { ReleaseMapping(static_cast<Mapping*>(hint)); }

Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Args a(info, "mmap");
  Napi::Env env = a.Env();
  int fd = a.Fd(0);
  double offset = a.Int(1, "offset", 0, kMaxSafeInt);
  size_t len = static_cast<size_t>(a.Int(2, "length", 1, kMaxSafeInt));
  if (std::fmod(offset, static_cast<double>(sysconf(_SC_PAGESIZE))) != 0) a.Fail("offset must be page-aligned");
  void* ptr = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (ptr == MAP_FAILED) ThrowSys(env, "mmap", errno);
  Mapping* m = new Mapping{ptr, len, false, 2};  // owners: the finalizer and this function
  // Deliberately no napi_adjust_external_memory: guest RAM is not garbage the GC could reclaim.
  napi_value ab;
  napi_status st = napi_create_external_arraybuffer(env, ptr, len, FinalizeMapping, m, &ab);
  if (st != napi_ok) {
    // The finalizer may have run already (Node 20 above 4 GiB), may run later, or never:
    // ReleaseMapping is right in each case. Node may have left its own exception pending.
    std::string why;
    napi_value pending;
    bool isPending = false;
    if (napi_is_exception_pending(env, &isPending) == napi_ok && isPending &&
        napi_get_and_clear_last_exception(env, &pending) == napi_ok) {
      Napi::Value v(env, pending);
      if (v.IsObject()) {
        Napi::Value msg = v.As<Napi::Object>().Get("message");
        if (msg.IsString()) why = msg.As<Napi::String>().Utf8Value();
      }
    }
    ReleaseMapping(m);
    Napi::Error e = Napi::Error::New(env, "mmap: this Node cannot make an ArrayBuffer of " + std::to_string(len) +
        " bytes (napi_create_external_arraybuffer status " + std::to_string(st) + (why.empty() ? "" : ": " + why) +
        "); the mapping was released. Node >= 22 maps regions of any size");
    e.Value().Set("code", "ERR_VMPI_MMAP_TOO_LARGE");
    throw e;
  }
  {
    std::lock_guard<std::mutex> lock(g_mappings_mu);
    m->refs--;  // the finalizer is now the only owner
    g_mappings[ptr] = m;
  }
  Napi::ArrayBuffer result(env, ab);
  result.TypeTag(&kMappingTag);  // should this throw, the finalizer still unmaps
  return result;
}

Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Args a(info, "munmap");
  Napi::Env env = a.Env();
  if (!info[0].IsArrayBuffer() || !info[0].As<Napi::ArrayBuffer>().CheckTypeTag(&kMappingTag))
    a.Fail("buffer must be an ArrayBuffer returned by mmap");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  void* ptr = ab.Data();
  if (ptr == nullptr) return env.Undefined();  // already detached: munmap is idempotent
  Mapping* m = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mappings_mu);
    auto it = g_mappings.find(ptr);
    if (it != g_mappings.end()) m = it->second;
  }
  if (m == nullptr) throw Napi::Error::New(env, "munmap: mapping not found (addon bug)");
  // Detach first: if that fails the memory stays mapped, because JavaScript could still reach it.
  napi_status st = napi_detach_arraybuffer(env, ab);
  if (st != napi_ok) throw Napi::Error::New(env, "munmap: napi_detach_arraybuffer failed (status " + std::to_string(st) + ")");
  {
    std::lock_guard<std::mutex> lock(g_mappings_mu);
    g_mappings.erase(ptr);
  }
  // The finalizer cannot have run: Node defers it to the loop, and we are on the JS thread.
  if (::munmap(m->ptr, m->len) < 0) ThrowSys(env, "munmap", errno);  // finalizer will retry
  {
    std::lock_guard<std::mutex> lock(g_mappings_mu);
    m->unmapped = true;
  }
  return env.Undefined();
}

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Args a(info, "memfdCreate");
  std::string name = a.Str(0, "name", 249);
  off_t size = static_cast<off_t>(a.Int(1, "size", 0, kMaxSafeInt));
  UniqueFd fd(memfd_create(name.c_str(), MFD_CLOEXEC));
  if (fd.get() < 0) ThrowSys(a.Env(), "memfd_create", errno);
  if (ftruncate(fd.get(), size) < 0) ThrowSys(a.Env(), "ftruncate", errno);
  return Napi::Number::New(a.Env(), fd.release());
}

Napi::Value PageSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(sysconf(_SC_PAGESIZE)));
}

// ---- eventfd ---------------------------------------------------------------------------------

// One read of an eventfd counter: 1 = got *value, 0 = EAGAIN (not signalled), -errno = failed.
// RWF_NOWAIT makes it non-blocking whatever the file's flags say: whoever sent us the fd shares
// its O_NONBLOCK flag and could clear it, then drain the counter between our poll and our read.
int ReadEventfd(int fd, uint64_t* value) {
  ssize_t n;
  iovec iov{value, sizeof *value};
  do n = preadv2(fd, &iov, 1, -1, RWF_NOWAIT); while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EOPNOTSUPP || errno == ENOSYS))  // no per-call nowait for this file
    do n = read(fd, value, sizeof *value); while (n < 0 && errno == EINTR);
  if (n == sizeof *value) return 1;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  return n < 0 ? -errno : -EIO;
}

Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  Args a(info, "eventfd");
  unsigned initval = static_cast<unsigned>(a.Int(0, "initval", 0, UINT_MAX));
  int fd = eventfd(initval, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) ThrowSys(a.Env(), "eventfd", errno);
  return Napi::Number::New(a.Env(), fd);
}

Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  Args a(info, "eventfdRead");
  uint64_t value = 0;
  int r = ReadEventfd(a.Fd(0), &value);
  if (r < 0) ThrowSys(a.Env(), "read", -r);
  return Napi::Number::New(a.Env(), r == 0 ? 0.0 : static_cast<double>(value));
}

Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  Args a(info, "eventfdWrite");
  int fd = a.Fd(0);
  uint64_t value = static_cast<uint64_t>(a.Int(1, "value", 1, kMaxSafeInt));
  // The fd's O_NONBLOCK lives on a file description the peer that sent it shares and may clear;
  // eventfd writes have no per-call nowait. So ask first whether a write fits (POLLOUT: the
  // counter can take 1, which is what the server writes): a counter at its maximum is "already
  // signalled", never a blocked event loop. (Only a peer that clears the flag and fills the
  // counter between this poll and the write could still block it.)
  pollfd p{fd, POLLOUT, 0};
  int pr;
  do pr = poll(&p, 1, 0); while (pr < 0 && errno == EINTR);
  if (pr == 0) return a.Env().Undefined();
  ssize_t n;
  do n = write(fd, &value, sizeof value); while (n < 0 && errno == EINTR);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ThrowSys(a.Env(), "write", errno);
  return a.Env().Undefined();
}

// ---- watchers --------------------------------------------------------------------------------
//
// Lifetime: the wrapper holds a strong reference to its JS object (Ref) while the poll handle is
// started and while uv_close is pending, so a started watcher that JavaScript drops keeps firing;
// stop() and the close callback drop that reference, so a stopped or closed watcher can be GC'd.
// The uv_poll_t lives in a heap Poll that only OnClose frees; a watcher GC'd unclosed (possible
// only while stopped) is closed by its destructor, with owner = nullptr.
//
// Environment teardown (worker exit, process exit): Node dlcloses the addon right after the
// environment is gone, so every close callback must have run by then, or the loop jumps into
// unmapped code (this crashed a worker with an unclosed watcher). An async cleanup hook closes
// every open handle and reports completion only when the last OnClose has run.

class Watcher;

struct Addon;

struct Poll {
  uv_poll_t uv;
  Addon* addon;
  Watcher* owner;  // null once the watcher is finalized
  bool closing;
};

struct Addon {  // per-environment instance data
  Napi::FunctionReference watcherCtor;
  std::unordered_set<Poll*> polls;  // allocated and not yet freed by OnClose
  bool tearingDown = false;
  napi_async_cleanup_hook_handle teardownDone = nullptr;  // set while teardown awaits OnClose
};

class Watcher : public Napi::ObjectWrap<Watcher> {
 public:
  enum Mode { kReadable = 0, kEventfd = 1, kEvents = 2 };
  static constexpr int kEventMask = UV_READABLE | UV_WRITABLE | UV_DISCONNECT;

  static void Init(Napi::Env env, Addon* addon) {
    addon->watcherCtor = Napi::Persistent(DefineClass(env, "FdWatcher", {
        InstanceMethod<&Watcher::Start>("start"),
        InstanceMethod<&Watcher::Stop>("stop"),
        InstanceMethod<&Watcher::Close>("close"),
    }));
  }

  static Napi::Value Create(const Napi::CallbackInfo& info, Mode mode) {
    Napi::Env env = info.Env();
    if (mode == kEvents)  // watchFd(fd, events, cb): the constructor takes (fd, cb, mode, events)
      return env.GetInstanceData<Addon>()->watcherCtor.New({info[0], info[2], Napi::Number::New(env, mode), info[1]});
    return env.GetInstanceData<Addon>()->watcherCtor.New({info[0], info[1], Napi::Number::New(env, mode)});
  }

  explicit Watcher(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<Watcher>(info),
        ctx_(info.Env(), "vmpi:FdWatcher"),
        addon_(info.Env().GetInstanceData<Addon>()) {
    Napi::Value m = info[2];
    int mode = m.IsNumber() ? m.As<Napi::Number>().Int32Value() : kReadable;
    mode_ = mode == kEventfd ? kEventfd : mode == kEvents ? kEvents : kReadable;
    Args a(info, mode_ == kEventfd ? "watchEventfd" : mode_ == kEvents ? "watchFd" : "watchReadable");
    fd_ = a.Fd(0);
    events_ = mode_ == kEventfd ? UV_READABLE : UV_READABLE | UV_DISCONNECT;
    if (mode_ == kEvents) events_ = EventsArg(a, 3);
    cb_ = Napi::Persistent(a.Fn(1, "callback"));
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(info.Env(), &loop) != napi_ok) throw Napi::Error::New(info.Env(), "no uv loop");
    poll_ = new Poll{{}, addon_, this, false};
    int err = uv_poll_init(loop, &poll_->uv, fd_);  // fails with EEXIST if another started watcher has fd
    if (err != 0) {  // not registered with the loop: a plain delete is right
      delete poll_;
      poll_ = nullptr;
      ThrowSys(info.Env(), "uv_poll_init", -err);
    }
    poll_->uv.data = poll_;
    addon_->polls.insert(poll_);
  }

  ~Watcher() override {
    if (poll_ == nullptr) return;
    poll_->owner = nullptr;  // OnClose then only frees the handle
    CloseHandle(poll_);
  }

  static void Teardown(napi_async_cleanup_hook_handle done, void* arg) {
    Addon* addon = static_cast<Addon*>(arg);
    addon->tearingDown = true;
    for (Poll* p : addon->polls) CloseHandle(p);  // OnClose runs later: no iterator invalidation
    if (addon->polls.empty()) napi_remove_async_cleanup_hook(done);
    else addon->teardownDone = done;
  }

 private:
  // A non-empty subset of UV_READABLE | UV_WRITABLE | UV_DISCONNECT.
  static int EventsArg(const Args& a, size_t i) {
    int ev = static_cast<int>(a.Int(i, "events", 1, kEventMask));
    if ((ev & ~kEventMask) != 0) a.Fail("events must be a non-empty mix of UV_READABLE, UV_WRITABLE, UV_DISCONNECT");
    return ev;
  }

  void Start(const Napi::CallbackInfo& info) {
    if (poll_ == nullptr || poll_->closing) throw Napi::Error::New(info.Env(), "FdWatcher.start: watcher is closed");
    int events = events_;
    if (mode_ == kEvents && !info[0].IsUndefined()) events = EventsArg(Args(info, "FdWatcher.start"), 0);
    int err = uv_poll_start(&poll_->uv, events, OnPoll);  // on a started handle: changes the events
    if (err != 0) ThrowSys(info.Env(), "uv_poll_start", -err);
    events_ = events;
    Hold(true);
  }

  void Stop(const Napi::CallbackInfo&) {
    if (poll_ == nullptr || poll_->closing) return;
    uv_poll_stop(&poll_->uv);
    Hold(false);
  }

  void Close(const Napi::CallbackInfo&) {
    if (poll_ == nullptr || poll_->closing) return;
    Hold(true);  // until OnClose
    cb_.Reset();
    CloseHandle(poll_);
  }

  void Hold(bool hold) {
    if (hold == held_) return;
    held_ = hold;
    if (hold) Ref(); else Unref();
  }

  static void CloseHandle(Poll* p) {
    if (p->closing) return;
    p->closing = true;
    uv_poll_stop(&p->uv);
    uv_close(reinterpret_cast<uv_handle_t*>(&p->uv), OnClose);
  }

  static void OnClose(uv_handle_t* h) {
    Poll* p = static_cast<Poll*>(h->data);
    Addon* addon = p->addon;
    Watcher* w = p->owner;
    addon->polls.erase(p);
    delete p;
    if (w != nullptr) {
      w->poll_ = nullptr;
      if (!addon->tearingDown) {  // at teardown Node finalizes every wrap, held or not
        Napi::HandleScope scope(w->Env());
        try { w->Hold(false); } catch (const Napi::Error&) { /* nothing sensible to do */ }
      }
    }
    if (addon->teardownDone != nullptr && addon->polls.empty()) {
      napi_remove_async_cleanup_hook(addon->teardownDone);
      addon->teardownDone = nullptr;
    }
  }

  static void OnPoll(uv_poll_t* h, int status, int events) {
    Watcher* w = static_cast<Poll*>(h->data)->owner;
    if (w == nullptr) return;
    Napi::Env env = w->Env();
    Napi::HandleScope scope(env);
    // The addon's own failures (poll error, a read that is not one whole counter) go to the
    // callback as a negative number with the watcher stopped: they never end the process.
    try {
      Napi::Object self = w->Value();  // keeps the object alive even if the callback drops it
      if (status < 0) w->Hold(false);  // libuv has already stopped the handle
      double arg;
      if (w->mode_ != kEventfd) {
        arg = status < 0 ? -1 : events;
      } else if (status < 0) {
        arg = status;  // a negative errno (libuv's are -errno on Linux)
      } else {
        // One read: an eventfd hands over its whole counter at once, and the level-triggered poll
        // calls again if it was signalled meanwhile. (A loop would never end on an EFD_SEMAPHORE
        // eventfd with a huge counter, or block on one that is not O_NONBLOCK.)
        uint64_t v = 0;
        int r = ReadEventfd(w->fd_, &v);
        if (r == 0 || (r > 0 && v == 0)) return;
        if (r < 0) {
          uv_poll_stop(h);
          w->Hold(false);
          arg = r;  // -errno; -EIO for a short read (not an eventfd)
        } else {
          arg = static_cast<double>(v);
        }
      }
      if (w->cb_.IsEmpty()) return;
      w->cb_.MakeCallback(self, {Napi::Number::New(env, arg)}, w->ctx_);
    } catch (const Napi::Error& e) {
      // Only an exception thrown by the JavaScript callback gets here. No JavaScript frame to
      // return to: report it like any uncaught exception ('uncaughtException'), as Node does for
      // its own callbacks. Callers that must survive their own bugs catch inside the callback.
      napi_fatal_exception(env, e.Value());
    }
  }

  Napi::AsyncContext ctx_;
  Napi::FunctionReference cb_;
  Addon* addon_;
  Poll* poll_ = nullptr;  // null once OnClose has freed it
  int fd_ = -1;
  Mode mode_ = kReadable;
  int events_ = 0;  // what start() without an argument watches
  bool held_ = false;  // Ref() taken
};

// ---- Unix datagrams (sd_notify) --------------------------------------------------------------
//
// systemd's notify protocol: one datagram to $NOTIFY_SOCKET ("READY=1\n…", fds with FDSTORE=1).
// A path starting with '@' names the abstract namespace (the '@' becomes a NUL, no terminator).

socklen_t DgramAddr(const Args& a, size_t i, sockaddr_un* addr) {
  *addr = sockaddr_un{};
  addr->sun_family = AF_UNIX;
  std::string path = a.Str(i, "path", sizeof(addr->sun_path) - 1);
  memcpy(addr->sun_path, path.data(), path.size());
  if (path[0] == '@') {
    addr->sun_path[0] = '\0';
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  }
  return static_cast<socklen_t>(sizeof *addr);
}

// sendDgramUnix(path, buf, offset, length, fds|null): one datagram from a fresh unbound socket.
Napi::Value SendDgramUnix(const Napi::CallbackInfo& info) {
  Args a(info, "sendDgramUnix");
  Napi::Env env = a.Env();
  sockaddr_un addr;
  socklen_t alen = DgramAddr(a, 0, &addr);
  size_t len;
  uint8_t* data = a.Slice(1, 0, &len);
  int fds[kMaxSendFds];
  int nfds = SendFds(a, 4, fds);
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) ThrowSys(env, "socket", errno);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxSendFds)];
  iovec iov{data, len};
  msghdr msg{};
  msg.msg_name = &addr;
  msg.msg_namelen = alen;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  AttachRights(&msg, control, sizeof control, fds, nfds);
  ssize_t n;
  // Blocking send: systemd reads its notify socket promptly, and a datagram is all or nothing.
  do n = sendmsg(fd.get(), &msg, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  if (n < 0) ThrowSys(env, "sendmsg", errno, std::string(info[0].As<Napi::String>().Utf8Value()));
  return Napi::Number::New(env, static_cast<double>(n));
}

// bindUnixDgram(path): a non-blocking datagram socket bound to path (tests read notify messages
// from it with recvMsg). An existing path gives EADDRINUSE.
Napi::Value BindUnixDgram(const Napi::CallbackInfo& info) {
  Args a(info, "bindUnixDgram");
  sockaddr_un addr;
  socklen_t alen = DgramAddr(a, 0, &addr);
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) ThrowSys(a.Env(), "socket", errno);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), alen) < 0) ThrowSys(a.Env(), "bind", errno);
  return Napi::Number::New(a.Env(), fd.release());
}

Napi::Value WatchReadable(const Napi::CallbackInfo& info) { return Watcher::Create(info, Watcher::kReadable); }
Napi::Value WatchEventfd(const Napi::CallbackInfo& info) { return Watcher::Create(info, Watcher::kEventfd); }
Napi::Value WatchFd(const Napi::CallbackInfo& info) { return Watcher::Create(info, Watcher::kEvents); }

// ---- fd checks for received fds (hardening) --------------------------------------------------
//
// What a back-end needs to check before it trusts an fd a peer sent: make it non-blocking (the
// peer may have sent a blocking eventfd), read its seals (a memfd that can still shrink turns a
// later access into SIGBUS), and create sealed memfds for test front-ends, as QEMU's
// memory-backend-memfd (seal=on) does.

// setNonblock(fd, on = true): O_NONBLOCK on or (for tests playing a hostile peer) off.
Napi::Value SetNonblock(const Napi::CallbackInfo& info) {
  Args a(info, "setNonblock");
  int fd = a.Fd(0);
  bool on = info[1].IsUndefined() || info[1].ToBoolean().Value();
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) ThrowSys(a.Env(), "fcntl", errno);
  int want = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (want != flags && fcntl(fd, F_SETFL, want) < 0) ThrowSys(a.Env(), "fcntl", errno);
  return a.Env().Undefined();
}

// F_GET_SEALS: the seal bits, or -1 when the file does not support sealing (EINVAL: not shmem,
// hugetlbfs or memfd).
Napi::Value FdSeals(const Napi::CallbackInfo& info) {
  Args a(info, "fdSeals");
  int seals = fcntl(a.Fd(0), F_GET_SEALS);
  if (seals < 0) {
    if (errno == EINVAL) return Napi::Number::New(a.Env(), -1);
    ThrowSys(a.Env(), "fcntl", errno);
  }
  return Napi::Number::New(a.Env(), seals);
}

// memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING) + ftruncate(size) + F_ADD_SEALS(seals).
Napi::Value MemfdCreateSealed(const Napi::CallbackInfo& info) {
  Args a(info, "memfdCreateSealed");
  std::string name = a.Str(0, "name", 249);
  off_t size = static_cast<off_t>(a.Int(1, "size", 0, kMaxSafeInt));
  int seals = static_cast<int>(a.Int(2, "seals", 0, 0xffff));
  UniqueFd fd(memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd.get() < 0) ThrowSys(a.Env(), "memfd_create", errno);
  if (ftruncate(fd.get(), size) < 0) ThrowSys(a.Env(), "ftruncate", errno);
  if (seals != 0 && fcntl(fd.get(), F_ADD_SEALS, seals) < 0) ThrowSys(a.Env(), "fcntl", errno);
  return Napi::Number::New(a.Env(), fd.release());
}

// ---- shared-memory rings (src/dif/ipc/ring.ts) ----------------------------------------------
//
// fence(): a full (sequentially consistent) memory fence, for the sleep/wake handshake of a flow's
// shared-memory ring: JavaScript has no StoreLoad barrier on a non-shared ArrayBuffer, and x86
// (TSO) reorders a store with a later load of another location. Called once per sleep
// transition or batch, never per SDU. The N-API call itself is not a fence the compiler or CPU
// must honour, hence the explicit one.
Napi::Value Fence(const Napi::CallbackInfo& info) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return info.Env().Undefined();
}

void InitFdChecks(Napi::Env env, Napi::Object exports) {
  exports.Set("fence", Napi::Function::New(env, Fence, "fence"));
  exports.Set("setNonblock", Napi::Function::New(env, SetNonblock, "setNonblock"));
  exports.Set("fdSeals", Napi::Function::New(env, FdSeals, "fdSeals"));
  exports.Set("memfdCreateSealed", Napi::Function::New(env, MemfdCreateSealed, "memfdCreateSealed"));
  exports.Set("F_SEAL_SEAL", static_cast<double>(F_SEAL_SEAL));
  exports.Set("F_SEAL_SHRINK", static_cast<double>(F_SEAL_SHRINK));
  exports.Set("F_SEAL_GROW", static_cast<double>(F_SEAL_GROW));
  exports.Set("F_SEAL_WRITE", static_cast<double>(F_SEAL_WRITE));
}

// ---- restart: fds that outlive the process (src/ops/restart/) ------------------------------
//
// sameFile(a, b): kcmp(KCMP_FILE): do fds a and b refer to the same open file description?
// systemd's fd store keeps one copy of an open file (the first name wins), so the restart code
// must know when QEMU sent a file it already stored (every SET_MEM_TABLE re-sends the memfd).
Napi::Value SameFile(const Napi::CallbackInfo& info) {
  Args a(info, "sameFile");
  pid_t pid = getpid();
  long r = syscall(SYS_kcmp, pid, pid, 0 /* KCMP_FILE */, a.Fd(0), a.Fd(1));
  if (r < 0) ThrowSys(a.Env(), "kcmp", errno);
  return Napi::Boolean::New(a.Env(), r == 0);
}

// setParentDeathSignal(sig): prctl(PR_SET_PDEATHSIG): a worker dies with the keeper that holds
// its fds, instead of living on as an orphan nobody can restart.
Napi::Value SetParentDeathSignal(const Napi::CallbackInfo& info) {
  Args a(info, "setParentDeathSignal");
  int sig = static_cast<int>(a.Int(0, "signal", 0, 64));
  if (prctl(PR_SET_PDEATHSIG, sig) < 0) ThrowSys(a.Env(), "prctl", errno);
  return a.Env().Undefined();
}

void InitPacket(Napi::Env env, Napi::Object exports);  // AF_PACKET block, at the end of the file
// ---- batched records: sendmmsg/recvmmsg (src/dif/ipc/record.ts) --------------------------
//
// The host data path's SOCK_SEQPACKET flow sockets carry one record per SDU; these move many
// records per system call and per N-API crossing, between the socket and one caller-provided
// buffer, with the records' places in typed arrays the caller keeps (nothing allocated per
// record, no result objects). Non-blocking (MSG_DONTWAIT) whatever the fd's flags.

constexpr size_t kMaxBatchRecords = 256;  // per call (the kernel takes up to UIO_MAXIOV, 1024); ~20 KiB of stack

// A Uint32Array/Int32Array argument of at least `min` elements.
template <typename T>
T* Ints(const Args& a, size_t i, const char* name, napi_typedarray_type type, size_t min) {
  Napi::Value v = a.Info()[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    a.Fail(std::string(name) + (type == napi_uint32_array ? " must be a Uint32Array" : " must be an Int32Array"));
  Napi::TypedArray arr = v.As<Napi::TypedArray>();
  if (arr.ElementLength() < min) a.Fail(std::string(name) + " is too short for the records asked");
  return reinterpret_cast<T*>(static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset());
}

// The arguments (fd, buf, offsets, lengths, first, count) of a batched send (sendRecords,
// packetSendBatch): item k = first..first+count-1 (count 1..maxCount) is buf[offsets[k],
// offsets[k]+lengths[k]), at least minLen bytes (`tooShort` names what it would then be shorter
// than). Checks them all, points msgs[0..count) at the items through iovs, and returns count.
size_t SendBatchArgs(const Args& a, size_t maxCount, const char* item, size_t minLen, const char* tooShort, mmsghdr* msgs, iovec* iovs) {
  Napi::Uint8Array buf = a.Bytes(1, "buf");
  size_t first = static_cast<size_t>(a.Int(4, "first", 0, 0xffffffff));
  size_t count = static_cast<size_t>(a.Int(5, "count", 1, static_cast<double>(maxCount)));
  const uint32_t* offs = Ints<uint32_t>(a, 2, "offsets", napi_uint32_array, first + count);
  const uint32_t* lens = Ints<uint32_t>(a, 3, "lengths", napi_uint32_array, first + count);
  size_t size = buf.ByteLength();
  for (size_t k = 0; k < count; k++) {
    size_t off = offs[first + k], len = lens[first + k];
    if (off > size || len > size - off) a.Fail(std::string(item) + " " + std::to_string(first + k) + " lies outside buf");
    if (len < minLen) a.Fail(std::string(item) + " " + std::to_string(first + k) + " is shorter than " + tooShort);
    iovs[k] = iovec{buf.Data() + off, len};
    msgs[k] = mmsghdr{};
    msgs[k].msg_hdr.msg_iov = &iovs[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
  }
  return count;
}

// sendmmsg(fd, msgs, count, flags | MSG_DONTWAIT), again after EINTR: how many were sent, or -1
// when the first met EAGAIN (and ENOBUFS when `noBufsIsFull`: a device queue that is full). Any
// other error is thrown.
int SendBatch(Napi::Env env, int fd, mmsghdr* msgs, size_t count, int flags, bool noBufsIsFull) {
  int n;
  do n = sendmmsg(fd, msgs, static_cast<unsigned>(count), flags | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || (noBufsIsFull && errno == ENOBUFS)) return -1;
    ThrowSys(env, "sendmmsg", errno);
  }
  return n;
}

// The body of a batched send's entry point `fn` (sendRecords, packetSendBatch): its arguments
// checked (SendBatchArgs, at most kMax items), one sendmmsg (SendBatch). Returns what SendBatch
// does (-1: the first item met a full queue); each entry point says that in its own way.
template <size_t kMax>
int SendBatchEntry(const Napi::CallbackInfo& info, const char* fn, const char* item, size_t minLen, const char* tooShort, int flags, bool noBufsIsFull) {
  Args a(info, fn);
  int fd = a.Fd(0);
  mmsghdr msgs[kMax];
  iovec iovs[kMax];
  size_t count = SendBatchArgs(a, kMax, item, minLen, tooShort, msgs, iovs);
  return SendBatch(a.Env(), fd, msgs, count, flags, noBufsIsFull);
}

// sendRecords(fd, buf, offsets, lengths, first, count): records k = first..first+count-1 are
// buf[offsets[k], offsets[k]+lengths[k]), sent with one sendmmsg (MSG_NOSIGNAL). Returns how many
// were sent (>= 1), -1 when the first one met EAGAIN. An error on the first record is thrown (EPIPE,
// EMSGSIZE: larger than the send buffer, ...); one on a later record ends the batch there and
// comes back on the next call, which starts with that record.
Napi::Value SendRecords(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), SendBatchEntry<kMaxBatchRecords>(info, "sendRecords", "record", 0, "", MSG_NOSIGNAL, false));
}

// recvRecords(fd, buf, slot, max, lengths): up to `max` records with one recvmmsg, record k into
// buf[k*slot, (k+1)*slot). Returns how many (>= 1), or -1 when none was queued (EAGAIN).
// lengths[k] is the record's length: 0 is a 0-byte record or end of file (once the peer closed,
// every further entry reads 0); more than `slot` means the record was longer than its slot and
// was cut (MSG_TRUNC: the caller must not take it as whole); -1 means fds came with it (the
// kernel closed them, MSG_CTRUNC). Every record counted has left the socket.
Napi::Value RecvRecords(const Napi::CallbackInfo& info) {
  Args a(info, "recvRecords");
  Napi::Env env = a.Env();
  int fd = a.Fd(0);
  Napi::Uint8Array buf = a.Bytes(1, "buf");
  size_t slot = static_cast<size_t>(a.Int(2, "slot", 1, 0x7ffffffe));
  size_t max = static_cast<size_t>(a.Int(3, "max", 1, kMaxBatchRecords));
  int32_t* lens = Ints<int32_t>(a, 4, "lengths", napi_int32_array, max);
  if (buf.ByteLength() / slot < max) a.Fail("buf must hold max * slot bytes");
  mmsghdr msgs[kMaxBatchRecords];
  iovec iovs[kMaxBatchRecords];
  for (size_t k = 0; k < max; k++) {
    iovs[k] = iovec{buf.Data() + k * slot, slot};
    msgs[k] = mmsghdr{};
    msgs[k].msg_hdr.msg_iov = &iovs[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
  }
  int n;
  // MSG_TRUNC: a cut record reports its real length (AF_UNIX datagrams and SEQPACKET).
  do n = recvmmsg(fd, msgs, static_cast<unsigned>(max), MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC, nullptr); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowSys(env, "recvmmsg", errno);
  }
  for (int k = 0; k < n; k++) {
    const msghdr& h = msgs[k].msg_hdr;
    size_t len = msgs[k].msg_len;
    if (h.msg_flags & MSG_CTRUNC) lens[k] = -1;
    else if ((h.msg_flags & MSG_TRUNC) && len <= slot) lens[k] = static_cast<int32_t>(slot + 1);
    else lens[k] = static_cast<int32_t>(len > 0x7fffffff ? 0x7fffffff : len);
  }
  return Napi::Number::New(env, n);
}

void InitMmsg(Napi::Env env, Napi::Object exports) {
  exports.Set("sendRecords", Napi::Function::New(env, SendRecords, "sendRecords"));
  exports.Set("recvRecords", Napi::Function::New(env, RecvRecords, "recvRecords"));
}

// ---- end of the batched records block ------------------------------------------------------

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Addon* addon = new Addon();
  env.SetInstanceData(addon);  // deleted by Node after the cleanup hooks have run
  Watcher::Init(env, addon);
  if (napi_add_async_cleanup_hook(env, Watcher::Teardown, addon, nullptr) != napi_ok)
    throw Napi::Error::New(env, "vmpi_native: napi_add_async_cleanup_hook failed");
  const std::pair<const char*, Napi::Function::Callback> fns[] = {
      {"listenUnix", ListenUnix}, {"connectUnix", ConnectUnix}, {"accept", Accept},
      {"recvMsg", RecvMsg},       {"recvBytes", RecvBytes},     {"sendMsg", SendMsg},
      {"close", Close},
      {"dup", Dup},               {"mmap", Mmap},               {"munmap", Munmap},
      {"memfdCreate", MemfdCreate}, {"pageSize", PageSize},     {"eventfd", Eventfd},
      {"eventfdRead", EventfdRead}, {"eventfdWrite", EventfdWrite},
      {"watchReadable", WatchReadable}, {"watchEventfd", WatchEventfd},
      {"watchFd", WatchFd},           {"ioctl", Ioctl},  {"ioctlNoArg", IoctlNoArg},
  };
  for (const auto& [name, fn] : fns) exports.Set(name, Napi::Function::New(env, fn, name));
  exports.Set("socketpairSeqpacket", Napi::Function::New(env, SocketpairSeqpacket, "socketpairSeqpacket"));
  exports.Set("sendDgramUnix", Napi::Function::New(env, SendDgramUnix, "sendDgramUnix"));
  exports.Set("bindUnixDgram", Napi::Function::New(env, BindUnixDgram, "bindUnixDgram"));
  exports.Set("UV_READABLE", static_cast<double>(UV_READABLE));
  exports.Set("UV_WRITABLE", static_cast<double>(UV_WRITABLE));
  exports.Set("UV_DISCONNECT", static_cast<double>(UV_DISCONNECT));
  InitFdChecks(env, exports);
  exports.Set("peerCred", Napi::Function::New(env, PeerCred, "peerCred"));  // IPC daemon block
  exports.Set("setSocketBuffers", Napi::Function::New(env, SetSocketBuffers, "setSocketBuffers"));
  exports.Set("sameFile", Napi::Function::New(env, SameFile, "sameFile"));  // restart block
  exports.Set("setParentDeathSignal", Napi::Function::New(env, SetParentDeathSignal, "setParentDeathSignal"));
  InitPacket(env, exports);
  InitMmsg(env, exports);  // batched records block
  return exports;
}

}  // namespace

NODE_API_MODULE(vmpi_native, Init)

// ---- AF_PACKET: the shim DIF over Ethernet (src/dif/shim-eth/) ------------------------------
//
// A raw packet socket bound to one interface: frames are written and read whole, Ethernet header
// included (the caller builds it: destination, source, an optional 802.1Q tag, the ethertype).
// Two ways to receive (packetOpen's vlanId):
//   * -1: bound to the ethertype itself. The kernel hands such a socket only untagged frames of
//     that type, and frames whose VLAN tag no VLAN device claimed (marked PACKET_OTHERHOST, tag
//     cleared): the receive reports the packet type so those can be dropped.
//   * 0..4094: bound to ETH_P_ALL with a classic BPF filter attached before the bind: only frames
//     with a VLAN tag of that id (the kernel has moved it out of the data into the skb, which the
//     filter reads with SKF_AD_VLAN_TAG) and that inner ethertype pass. This needs no 802.1Q
//     support in the kernel (no VLAN device). Outgoing frames are not looped back
//     (PACKET_IGNORE_OUTGOING).
// Received frames come in batches (recvmmsg) into slots of one caller-provided buffer, and sent
// frames may go in batches (sendmmsg) from one such buffer: no allocation per frame.
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
namespace {

constexpr int kMaxPacketBatch = 256;

// packetOpen(ifindex, ethertype, vlanId): the non-blocking raw packet socket described above.
Napi::Value PacketOpen(const Napi::CallbackInfo& info) {
  Args a(info, "packetOpen");
  int ifindex = static_cast<int>(a.Int(0, "ifindex", 1, INT_MAX));
  int ethertype = static_cast<int>(a.Int(1, "ethertype", 0x0600, 0xffff));
  int vlan = static_cast<int>(a.Int(2, "vlanId", -1, 4094));
  // Protocol 0: receives nothing until bound, so no frame slips in before the filter is on.
  UniqueFd fd(socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) ThrowSys(a.Env(), "socket", errno);
  int proto = ethertype;
  if (vlan >= 0) {
    proto = ETH_P_ALL;
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<__u32>(SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<__u32>(SKF_AD_OFF + SKF_AD_VLAN_TAG)),
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x0fff),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<__u32>(vlan), 0, 2),
        BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),  // the inner ethertype (the tag is out of the data)
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<__u32>(ethertype), 1, 0),
        BPF_STMT(BPF_RET | BPF_K, 0),
        BPF_STMT(BPF_RET | BPF_K, 0x40000),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
    if (setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0) ThrowSys(a.Env(), "setsockopt", errno, "SO_ATTACH_FILTER");
    int one = 1;
    if (setsockopt(fd.get(), SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) ThrowSys(a.Env(), "setsockopt", errno, "PACKET_IGNORE_OUTGOING");
  }
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(static_cast<uint16_t>(proto));
  sll.sll_ifindex = ifindex;
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sll), sizeof sll) < 0) ThrowSys(a.Env(), "bind", errno);
  return Napi::Number::New(a.Env(), fd.release());
}

// packetSend(fd, buf, offset, length): one whole frame on the bound interface; bytes sent, or -1
// on EAGAIN / ENOBUFS (the device queue is full: try again after a while).
Napi::Value PacketSend(const Napi::CallbackInfo& info) {
  Args a(info, "packetSend");
  int fd = a.Fd(0);
  size_t len;
  uint8_t* data = a.Slice(1, 14, &len);
  ssize_t n;
  do n = send(fd, data, len, MSG_DONTWAIT); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return Napi::Number::New(a.Env(), -1);
    ThrowSys(a.Env(), "send", errno);
  }
  return Napi::Number::New(a.Env(), static_cast<double>(n));
}

// packetSendBatch(fd, buf, offsets, lengths, first, count): frames k = first..first+count-1 are
// buf[offsets[k], offsets[k]+lengths[k]) (each a whole frame, at least an Ethernet header), sent
// with one sendmmsg on the bound interface. Returns how many were sent (>= 1), or 0 when the first
// met EAGAIN / ENOBUFS (the device queue is full: try again after a while). Another error on the
// first frame is thrown (ENETDOWN: the interface is down); one on a later frame ends the batch
// there and comes back on the next call, which starts with that frame. Nothing is allocated.
Napi::Value PacketSendBatch(const Napi::CallbackInfo& info) {
  int n = SendBatchEntry<kMaxPacketBatch>(info, "packetSendBatch", "frame", 14, "an Ethernet header", 0, true);
  return Napi::Number::New(info.Env(), n < 0 ? 0 : n);
}

// packetRecvBatch(fd, buf, slotBytes, maxFrames, meta): up to maxFrames frames, frame i in
// buf[i*slotBytes, ...), meta[2i] its full length (greater than slotBytes: it was cut, the
// caller drops it as oversize), meta[2i+1] its packet type (PACKET_HOST 0, BROADCAST 1,
// MULTICAST 2, OTHERHOST 3, OUTGOING 4). Returns the count (0: nothing waiting). A pending
// socket error (ENETDOWN when the interface went down) is thrown once.
Napi::Value PacketRecvBatch(const Napi::CallbackInfo& info) {
  Args a(info, "packetRecvBatch");
  int fd = a.Fd(0);
  Napi::Uint8Array buf = a.Bytes(1, "buf");
  size_t slot = static_cast<size_t>(a.Int(2, "slotBytes", 14, 1 << 20));
  int maxFrames = static_cast<int>(a.Int(3, "maxFrames", 1, kMaxPacketBatch));
  Napi::Value mv = info[4];
  if (!mv.IsTypedArray() || mv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) a.Fail("meta must be an Int32Array");
  Napi::Int32Array meta = mv.As<Napi::Int32Array>();
  if (buf.ByteLength() < slot * static_cast<size_t>(maxFrames)) a.Fail("buf must hold maxFrames * slotBytes bytes");
  if (meta.ElementLength() < static_cast<size_t>(2 * maxFrames)) a.Fail("meta must hold 2 * maxFrames entries");
  mmsghdr msgs[kMaxPacketBatch];
  iovec iovs[kMaxPacketBatch];
  sockaddr_ll addrs[kMaxPacketBatch];
  memset(msgs, 0, sizeof(mmsghdr) * maxFrames);
  for (int i = 0; i < maxFrames; i++) {
    iovs[i] = {buf.Data() + static_cast<size_t>(i) * slot, slot};
    msgs[i].msg_hdr.msg_iov = &iovs[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &addrs[i];
    msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
  }
  int n;
  do n = recvmmsg(fd, msgs, static_cast<unsigned>(maxFrames), MSG_DONTWAIT | MSG_TRUNC, nullptr); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(a.Env(), 0);
    ThrowSys(a.Env(), "recvmmsg", errno);
  }
  for (int i = 0; i < n; i++) {
    meta[2 * i] = static_cast<int32_t>(msgs[i].msg_len);
    meta[2 * i + 1] = addrs[i].sll_pkttype;
  }
  return Napi::Number::New(a.Env(), n);
}

// packetIfInfo(name): {index, mac (6 bytes), mtu, up, running} of an interface of this network
// namespace (SIOCGIFINDEX, SIOCGIFHWADDR, SIOCGIFMTU, SIOCGIFFLAGS). ENODEV: no such interface.
Napi::Value PacketIfInfo(const Napi::CallbackInfo& info) {
  Args a(info, "packetIfInfo");
  std::string name = a.Str(0, "name", IFNAMSIZ - 1);
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) ThrowSys(a.Env(), "socket", errno);
  ifreq ifr{};
  memcpy(ifr.ifr_name, name.data(), name.size());
  Napi::Object out = Napi::Object::New(a.Env());
  if (::ioctl(fd.get(), SIOCGIFINDEX, &ifr) < 0) ThrowSys(a.Env(), "ioctl", errno, "SIOCGIFINDEX " + name);
  out.Set("index", static_cast<double>(ifr.ifr_ifindex));
  if (::ioctl(fd.get(), SIOCGIFHWADDR, &ifr) < 0) ThrowSys(a.Env(), "ioctl", errno, "SIOCGIFHWADDR " + name);
  out.Set("hwType", static_cast<double>(ifr.ifr_hwaddr.sa_family));
  Napi::Uint8Array mac = Napi::Uint8Array::New(a.Env(), 6);
  memcpy(mac.Data(), ifr.ifr_hwaddr.sa_data, 6);
  out.Set("mac", mac);
  if (::ioctl(fd.get(), SIOCGIFMTU, &ifr) < 0) ThrowSys(a.Env(), "ioctl", errno, "SIOCGIFMTU " + name);
  out.Set("mtu", static_cast<double>(ifr.ifr_mtu));
  if (::ioctl(fd.get(), SIOCGIFFLAGS, &ifr) < 0) ThrowSys(a.Env(), "ioctl", errno, "SIOCGIFFLAGS " + name);
  out.Set("up", (ifr.ifr_flags & IFF_UP) != 0);
  out.Set("running", (ifr.ifr_flags & IFF_RUNNING) != 0);
  return out;
}

void InitPacket(Napi::Env env, Napi::Object exports) {
  exports.Set("packetOpen", Napi::Function::New(env, PacketOpen, "packetOpen"));
  exports.Set("packetSend", Napi::Function::New(env, PacketSend, "packetSend"));
  exports.Set("packetSendBatch", Napi::Function::New(env, PacketSendBatch, "packetSendBatch"));
  exports.Set("packetRecvBatch", Napi::Function::New(env, PacketRecvBatch, "packetRecvBatch"));
  exports.Set("packetIfInfo", Napi::Function::New(env, PacketIfInfo, "packetIfInfo"));
  exports.Set("PACKET_MAX_BATCH", static_cast<double>(kMaxPacketBatch));
}

}  // namespace
