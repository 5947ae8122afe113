// SPDX-License-Identifier: GPL-2.0
/*
 * udp-goodput - goodput of a one-way stream, measured at the receiver (bench/fig4a, the paper's
 * Fig. 4a: a client in the host sends to a server in the VM; netperf UDP_STREAM style).
 *
 *   udp-goodput [-w MS] [-t MS] [-r BYTES] recv PORT DURATION_MS
 *        receive UDP datagrams on 0.0.0.0:PORT and count their payload bytes
 *   udp-goodput [-b BYTES] send ADDR PORT SIZE DURATION_MS
 *        send SIZE-byte UDP datagrams (0 is valid) to ADDR:PORT as fast as the socket takes them
 *        for DURATION_MS (the host-side client); SIGTERM or SIGINT ends it early (it still
 *        prints its RESULT)
 *   udp-goodput [-w MS] [-t MS] [-B BYTES] vmpi-recv DEV CHANNEL DURATION_MS
 *        the same receiver on a VMPI channel (/dev/vmpiN bound to CHANNEL), for the shim DIF
 *        series: one read() per SDU, payload not inspected, exactly the loop and timing of recv.
 *        -B BYTES: batch-read mode (VMPI_BATCH_READ), reads of BYTES bytes (raised to 4 + max
 *        SDU, so any SDU fits) that return many SDUs as records "le32 length | SDU", each at a
 *        multiple of 4; every record counts as one SDU, as if it had been read alone, all of a
 *        read at its time (the first record of the first read opens the window, the rest of that
 *        read counts); adds reads= (the read() calls that returned records, the first one too).
 *        A record that runs past what read() returned is an ERROR (op=parse errno=EPROTO)
 *   udp-goodput [-B RECORDS] vmpi-send DEV CHANNEL SIZE DURATION_MS
 *        the sender on a VMPI channel (guest → host): one write() per SDU, blocking when the tx
 *        ring is full, for DURATION_MS (or until SIGTERM/SIGINT); the payload is written once.
 *        -B RECORDS: batch-write mode (VMPI_BATCH_WRITE), RECORDS SDUs per write() (as Node's
 *        writers in the guest do); datagrams= still counts SDUs
 *   udp-goodput [-w MS] [-t MS] stream-recv TARGET SIZE DURATION_MS
 *   udp-goodput stream-send TARGET SIZE DURATION_MS
 *        the same receiver and sender over a byte stream (virtio-serial): TARGET is a character
 *        device (/dev/vport0p1 in the guest) or unix:PATH (QEMU's chardev socket on the host).
 *        The sender does one write() per SDU (finishing a partial one before the next); the
 *        receiver one read() of up to SIZE bytes at a time, and counts bytes: datagrams= is
 *        bytes / SIZE (whole SDUs), reads= the read() calls. Before READY the receiver discards
 *        what a previous run left in the stream (until 100 ms pass without data, at most 2 s).
 *        Both use non-blocking I/O with poll(), so a peer that went away never blocks them past
 *        their deadline.
 *
 * Receivers print "READY ..." once the socket/channel is bound, then wait (at most -w MS, default
 * 30000) for the first datagram/SDU. Its arrival opens the measurement window; the window closes
 * DURATION_MS later, or earlier when nothing arrives for -t MS (default 2000: the sender
 * stopped). Goodput counts the datagrams/SDUs that arrived after the first one, inside the
 * window, over the time from the first to the end of the window (or to the last arrival when the
 * window closed on the idle timeout). The payload is never read beyond what recv()/read() copies.
 * -r BYTES: SO_RCVBUF for recv (default: the system default, as netperf).
 * -b BYTES: SO_SNDBUF for send (default: the system default).
 *
 * Every mode prints one machine-readable line on stdout at the end:
 *   RESULT mode=recv port=5001 datagrams=123 bytes=492000 seconds=1.000012 mbps=3.94 pps=123
 *          size_min=4000 size_max=4000 status=ok
 * (mode=vmpi-recv has dev= and channel= instead of port=; mode=send adds errors=, the sends the
 * kernel refused, e.g. ENOBUFS or ECONNREFUSED from an ICMP unreachable; datagrams= counts only
 * sends that succeeded). status: ok, or nodata when nothing arrived within -w MS.
 * On failure: ERROR mode=... op=socket|bind|open|recv|... errno=EADDRINUSE msg="..."
 * Exit status: 0 ok, 1 error, 2 no data.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#define PERF_PROG "udp-goodput"
#define PERF_USAGE \
	"usage: udp-goodput [-w WAIT_MS] [-t IDLE_MS] [-r RCVBUF] recv PORT DURATION_MS\n" \
	"       udp-goodput [-b SNDBUF] send ADDR PORT SIZE DURATION_MS\n" \
	"       udp-goodput [-w WAIT_MS] [-t IDLE_MS] [-B BYTES] vmpi-recv DEV CHANNEL DURATION_MS\n" \
	"       udp-goodput [-B RECORDS] vmpi-send DEV CHANNEL SIZE DURATION_MS\n" \
	"       udp-goodput [-w WAIT_MS] [-t IDLE_MS] stream-recv TARGET SIZE DURATION_MS\n" \
	"       udp-goodput stream-send TARGET SIZE DURATION_MS\n" \
	"       (TARGET: a character device, or unix:PATH)\n"
#include "perf-common.h"

static int wait_ms = 30000;
static int idle_ms = 2000;
static int rcvbuf;
static int sndbuf;
/* -B: vmpi-send, SDUs per batch write; vmpi-recv, bytes per batch read (0: one SDU per call). */
static unsigned int batch_opt;
static volatile sig_atomic_t stop;
/* stream-recv: the SDU size (datagrams= counts bytes / stream_sdu, reads= the read() calls). */
static size_t stream_sdu;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int fail(const char *op, int err)
{
	return perf_error(NULL, op, err);
}

/* What a receiver counted: SDUs/datagrams, their bytes and sizes. */
struct tally {
	uint64_t n, bytes;
	size_t smin, smax;
};

static void tally_one(struct tally *c, size_t len)
{
	c->n++;
	c->bytes += len;
	if (len < c->smin)
		c->smin = len;
	if (len > c->smax)
		c->smax = len;
}

/*
 * Count the records of a batch read (len bytes in buf: "le32 length | SDU", each at a multiple
 * of VMPI_BATCH_ALIGN), the first one only if !skip_first. Returns how many records the read
 * held, or -1 if one runs past len (or 1..3 bytes are left where a header should be).
 */
static long count_records(const unsigned char *buf, size_t len, int skip_first, struct tally *c)
{
	size_t off = 0;
	long recs = 0;

	while (off < len) {
		uint32_t le, sdu;

		if (len - off < VMPI_HDR_LEN)
			return -1;
		memcpy(&le, buf + off, sizeof(le));
		sdu = le32toh(le);
		if (sdu > len - off - VMPI_HDR_LEN)
			return -1;
		if (recs++ || !skip_first)
			tally_one(c, sdu);
		off = (off + VMPI_HDR_LEN + sdu + VMPI_BATCH_ALIGN - 1) &
		      ~(size_t)(VMPI_BATCH_ALIGN - 1);
	}
	return recs;
}

/*
 * The receive loop shared by recv and vmpi-recv: fd is non-blocking; rd() reads one
 * datagram/SDU into buf and returns its length, or -1 with errno. batch: each read returns
 * batch-read records (count_records), all of them counted at the read's time.
 */
static int receive(int fd, ssize_t (*rd)(int, void *, size_t), size_t cap, double duration,
		   const char *what, int batch)
{
	struct tally c = { .smin = SIZE_MAX };
	uint64_t reads = 0;
	double t0 = 0, tlast = 0, tend = 0;
	const char *status = "ok";
	char extra[128];
	int started = 0;
	char *buf = malloc(cap ? cap : 1);

	if (!buf)
		return fail("malloc", ENOMEM);
	perf_ready(what);
	for (;;) {
		ssize_t len = rd(fd, buf, cap);
		double t;

		if (len < 0) {
			int timeout, r;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return fail("recv", errno);
			if (!started) {
				timeout = wait_ms;
			} else {
				double left = tend - perf_now();

				if (left <= 0)
					break;
				timeout = (int)(left * 1000) + 1;
				if (timeout > idle_ms)
					timeout = idle_ms;
			}
			r = perf_wait_readable(fd, timeout);
			if (r < 0)
				return fail("poll", errno);
			if (r == 0) {
				if (!started) {
					status = "nodata";
					break;
				}
				if (perf_now() < tend && timeout == idle_ms) {
					/* The sender stopped before the window closed. */
					tend = tlast;
					break;
				}
			}
			continue;
		}
		t = perf_now();
		if (started && t > tend)
			break;
		if (batch) {
			/* The first record of the first read opens the window, it is not counted. */
			if (count_records((const unsigned char *)buf, len, !started, &c) < 0) {
				free(buf);
				return fail("parse", EPROTO);
			}
			reads++;
		} else if (started) {
			tally_one(&c, len);
		}
		tlast = t;
		if (!started) {
			started = 1;
			t0 = t;
			tend = t0 + duration;
		}
	}
	if (stream_sdu) {
		snprintf(extra, sizeof(extra), " reads=%" PRIu64, c.n);
		c.n = c.bytes / stream_sdu;
	} else {
		int k = snprintf(extra, sizeof(extra), " size_min=%zu size_max=%zu",
				 c.n ? c.smin : 0, c.smax);

		if (batch)
			snprintf(extra + k, sizeof(extra) - k, " reads=%" PRIu64, reads);
	}
	perf_result(what, "datagrams", "pps", c.n, c.bytes, started ? tend - t0 : 0, extra, status);
	free(buf);
	return started ? 0 : 2;
}

static ssize_t udp_read(int fd, void *buf, size_t cap)
{
	return recv(fd, buf, cap, 0);
}

/*
 * A UDP socket with buffer option bufopt (SO_RCVBUF, SO_SNDBUF) set to bufsize unless it is 0,
 * bound to (recv) or connected to (send) a. Returns the fd, or -1 with the ERROR line printed.
 */
static int udp_socket(int type_flags, int bufopt, int bufsize, const struct sockaddr_in *a,
		      int connect_to)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | type_flags, 0);
	const struct sockaddr *sa = (const struct sockaddr *)a;
	const char *op = NULL;

	if (fd < 0)
		op = "socket";
	else if (bufsize && setsockopt(fd, SOL_SOCKET, bufopt, &bufsize, sizeof(bufsize)) < 0)
		op = "setsockopt";
	else if (connect_to && connect(fd, sa, sizeof(*a)) < 0)
		op = "connect";
	else if (!connect_to && bind(fd, sa, sizeof(*a)) < 0)
		op = "bind";
	if (op) {
		fail(op, errno);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int do_recv(unsigned port, unsigned long duration_ms)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_ANY) };
	int fd = udp_socket(SOCK_NONBLOCK, SO_RCVBUF, rcvbuf, &a, 0);
	char what[32];

	if (fd < 0)
		return 1;
	snprintf(what, sizeof(what), "port=%u", port);
	/* 65535: any datagram fits, whatever SIZE the sender uses. */
	return receive(fd, udp_read, 65535, duration_ms / 1e3, what, 0);
}

static int do_vmpi_recv(const char *dev, uint32_t channel, unsigned long duration_ms)
{
	struct vmpi_info info;
	int fd = perf_vmpi_open(dev, &channel, O_NONBLOCK, &info, NULL);
	char what[96];

	size_t cap = info.max_sdu ? info.max_sdu : 65536;

	if (fd < 0)
		return 1;
	if (batch_opt) {
		uint32_t mode = VMPI_BATCH_READ;

		if (ioctl(fd, VMPI_IOC_SET_BATCH, &mode) < 0)
			return fail("ioctl", errno);
		cap = batch_opt > VMPI_HDR_LEN + cap ? batch_opt : VMPI_HDR_LEN + cap;
	}
	snprintf(what, sizeof(what), "dev=%s channel=%" PRIu32, dev, channel);
	return receive(fd, read, cap, duration_ms / 1e3, what, batch_opt != 0);
}

static int do_send(const char *addr, unsigned port, size_t size, unsigned long duration_ms)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	uint64_t n = 0, errors = 0;
	double t0, deadline;
	char what[96], extra[32];
	char *buf;
	int fd;

	if (inet_pton(AF_INET, addr, &a.sin_addr) != 1) {
		fprintf(stderr, "udp-goodput: bad IPv4 address '%s'\n", addr);
		usage();
	}
	fd = udp_socket(0, SO_SNDBUF, sndbuf, &a, 1);
	if (fd < 0)
		return 1;
	buf = calloc(1, size ? size : 1);
	if (!buf)
		return fail("malloc", ENOMEM);
	for (size_t i = 0; i < size; i++)
		buf[i] = (char)i;
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	t0 = perf_now();
	deadline = t0 + duration_ms / 1e3;
	for (uint64_t i = 0; !stop; i++) {
		if ((i & 63) == 0 && perf_now() >= deadline)
			break;
		if (send(fd, buf, size, 0) < 0) {
			if (errno != ENOBUFS && errno != ECONNREFUSED && errno != EAGAIN &&
			    errno != EINTR)
				return fail("send", errno);
			errors++;
			continue;
		}
		n++;
	}
	snprintf(what, sizeof(what), "addr=%s port=%u size=%zu", addr, port, size);
	snprintf(extra, sizeof(extra), " errors=%" PRIu64, errors);
	perf_result(what, "datagrams", "pps", n, (uint64_t)n * size, perf_now() - t0, extra, "ok");
	close(fd);
	free(buf);
	return 0;
}

static int do_vmpi_send(const char *dev, uint32_t channel, size_t size, unsigned long duration_ms)
{
	struct vmpi_info info;
	int fd = perf_vmpi_open(dev, &channel, 0, &info, NULL);
	size_t rec = (VMPI_HDR_LEN + size + VMPI_BATCH_ALIGN - 1) & ~(size_t)(VMPI_BATCH_ALIGN - 1);
	unsigned int per = batch_opt ? batch_opt : 1;
	size_t len = batch_opt ? rec * per : size;
	uint64_t n = 0;
	double t0, deadline;
	char what[96];
	char *buf;

	if (fd < 0)
		return 1;
	snprintf(what, sizeof(what), "dev=%s channel=%" PRIu32 " size=%zu", dev, channel, size);
	if (batch_opt) {
		uint32_t mode = VMPI_BATCH_WRITE;

		if (ioctl(fd, VMPI_IOC_SET_BATCH, &mode) < 0)
			return fail("ioctl", errno);
	}
	buf = calloc(1, len ? len : 1);
	if (!buf)
		return fail("malloc", ENOMEM);
	for (unsigned int r = 0; r < per; r++) {
		char *p = batch_opt ? buf + r * rec : buf;
		uint32_t le = htole32((uint32_t)size);

		if (batch_opt)
			memcpy(p, &le, VMPI_HDR_LEN);
		for (size_t i = 0; i < size; i++)
			p[(batch_opt ? VMPI_HDR_LEN : 0) + i] = (char)i;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	t0 = perf_now();
	deadline = t0 + duration_ms / 1e3;
	for (uint64_t i = 0; !stop; i++) {
		size_t off = 0;

		if ((i & 63) == 0 && perf_now() >= deadline)
			break;
		/* A batch write returns the bytes of the whole records sent: go on from there. */
		while (off < len || (len == 0 && off == 0)) {
			ssize_t w = write(fd, buf + off, len - off);

			if (w < 0) {
				if (errno == EINTR) {
					if (stop)
						break;
					continue;
				}
				return fail("write", errno);
			}
			if (!batch_opt) {
				n++;
				break;
			}
			n += (size_t)w / rec;	/* the records are all rec bytes, padding included */
			off += (size_t)w;
		}
	}
	perf_result(what, "datagrams", "pps", n, (uint64_t)n * size, perf_now() - t0, "", "ok");
	close(fd);
	free(buf);
	return 0;
}

/* A byte stream: a character device (opened with flags) or unix:PATH (connected); -1 printed. */
static int stream_open(const char *target, int flags)
{
	int fd;

	if (strncmp(target, "unix:", 5)) {
		fd = open(target, flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			fail("open", errno);
		return fd;
	}
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(target + 5) >= sizeof(a.sun_path)) {
		fail("connect", ENAMETOOLONG);
		return -1;
	}
	strcpy(a.sun_path, target + 5);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
		fail(fd < 0 ? "socket" : "connect", errno);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int do_stream_recv(const char *target, size_t size, unsigned long duration_ms)
{
	char what[160], junk[65536];
	double t0;
	int fd;

	if (!size) {
		fprintf(stderr, "udp-goodput: stream-recv needs SIZE > 0\n");
		usage();
	}
	fd = stream_open(target, O_RDONLY);
	if (fd < 0)
		return 1;
	/* What a previous run left in the stream is not this run's. */
	for (t0 = perf_now(); perf_now() - t0 < 2;) {
		ssize_t r = read(fd, junk, sizeof(junk));

		if (r > 0)
			continue;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN && perf_wait_readable(fd, 100) > 0)
			continue;
		break;
	}
	stream_sdu = size;
	snprintf(what, sizeof(what), "target=%s size=%zu", target, size);
	return receive(fd, read, size, duration_ms / 1e3, what, 0);
}

static int do_stream_send(const char *target, size_t size, unsigned long duration_ms)
{
	uint64_t n = 0;
	double t0, deadline;
	char what[160];
	char *buf;
	int fd;

	if (!size) {
		fprintf(stderr, "udp-goodput: stream-send needs SIZE > 0\n");
		usage();
	}
	fd = stream_open(target, O_WRONLY);
	if (fd < 0)
		return 1;
	buf = malloc(size);
	if (!buf)
		return fail("malloc", ENOMEM);
	for (size_t i = 0; i < size; i++)
		buf[i] = (char)i;
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	snprintf(what, sizeof(what), "target=%s size=%zu", target, size);
	t0 = perf_now();
	deadline = t0 + duration_ms / 1e3;
	for (size_t off = 0; !stop;) {
		ssize_t w = write(fd, buf + off, size - off);

		if (w < 0) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			double left = deadline - perf_now();

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return fail("write", errno);
			if (left <= 0)
				break;
			if (poll(&pfd, 1, left > 0.1 ? 100 : (int)(left * 1000) + 1) < 0 && errno != EINTR)
				return fail("poll", errno);
			continue;
		}
		off += w;
		if (off == size) {
			off = 0;
			if ((++n & 63) == 0 && perf_now() >= deadline)
				break;
		}
	}
	perf_result(what, "datagrams", "pps", n, (uint64_t)n * size, perf_now() - t0, "", "ok");
	close(fd);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct perf_opt opts[] = {
		PERF_OPT('w', "wait time", wait_ms),
		PERF_OPT('t', "idle timeout", idle_ms),
		PERF_OPT('r', "receive buffer size", rcvbuf),
		PERF_OPT('b', "send buffer size", sndbuf),
		PERF_OPT('B', "batch size", batch_opt),
	};
	const char *mode;

	setvbuf(stdout, NULL, _IOLBF, 0);
	argv = perf_args(&argc, argv, opts, sizeof(opts) / sizeof(opts[0]), 1);
	mode = perf_mode;
	if (!strcmp(mode, "recv") && argc == 3)
		return do_recv(parse_num(argv[1], "port"), parse_num(argv[2], "duration"));
	if (!strcmp(mode, "vmpi-recv") && argc == 4)
		return do_vmpi_recv(argv[1], parse_num(argv[2], "channel"),
				    parse_num(argv[3], "duration"));
	if (!strcmp(mode, "vmpi-send") && argc == 5)
		return do_vmpi_send(argv[1], parse_num(argv[2], "channel"), parse_num(argv[3], "size"),
				    parse_num(argv[4], "duration"));
	if (!strcmp(mode, "stream-recv") && argc == 4)
		return do_stream_recv(argv[1], parse_num(argv[2], "size"), parse_num(argv[3], "duration"));
	if (!strcmp(mode, "stream-send") && argc == 4)
		return do_stream_send(argv[1], parse_num(argv[2], "size"), parse_num(argv[3], "duration"));
	if (!strcmp(mode, "send") && argc == 5)
		return do_send(argv[1], parse_num(argv[2], "port"), parse_num(argv[3], "size"),
			       parse_num(argv[4], "duration"));
	usage();
}
