// SPDX-License-Identifier: GPL-2.0
/*
 * vmpi-perf - exercise a VMPI channel from inside the guest (/dev/vmpiN).
 *
 *   vmpi-perf [-t MS] [-s SEQ] send DEV CHANNEL SIZE COUNT   write COUNT pattern SDUs of SIZE bytes
 *   vmpi-perf [-t MS] [-s SEQ] [-d MS] recv DEV CHANNEL SIZE COUNT   read COUNT SDUs, verify
 *                                                            (SIZE "any": do not check lengths)
 *   vmpi-perf [-t MS] echo DEV CHANNEL [COUNT]               write every SDU back (COUNT 0: forever)
 *   vmpi-perf [-t MS] [-s SEQ] [-w N] loop DEV CHANNEL SIZE COUNT
 *                                     send COUNT pattern SDUs and read each back on the same file
 *                                     (for a host that echoes), at most N (default 1) in flight;
 *                                     verifies like recv and reports the round-trip time
 *   vmpi-perf [-t MS] dump DEV CHANNEL [COUNT]               print SDUs as hex (COUNT default 1)
 *   vmpi-perf [-s SEQ] raw DEV CHANNEL DATA                  write one SDU: DATA is hex ("" = empty),
 *                                                            "@N" = N pattern bytes, "-" = stdin
 *   vmpi-perf info DEV                                        print device info and counters
 *
 * -t MS: give up after MS milliseconds without an SDU (0, the default: wait forever).
 * -d MS: recv only: sleep MS milliseconds after READY before the first read (a slow or stuck
 *    reader: the driver holds the host back, then after rx_stall_ms drops, see docs/DEVICE.md).
 * -s SEQ: sequence number of the first SDU (default 0).
 * -w N: loop mode window (SDUs in flight).
 * -b BYTES: read buffer size (default: the device's max SDU); a longer SDU fails the read with
 *    EMSGSIZE and stays queued (the driver never truncates).
 *
 * Every mode prints one machine-readable line on stdout at the end:
 *   RESULT mode=recv dev=/dev/vmpi0 channel=3 sdus=1000 bytes=4000000 seconds=0.520000
 *          mbps=61.54 sdus_per_s=1923 crc32=0x1234abcd errors=0 badlen=0 gaps=0 status=ok
 * (one line; mbps = 10^6 bits per second over the time from the first to the last SDU), or on
 * failure: ERROR mode=... op=open|bind|read|write|... errno=EBUSY msg="..."
 * Exit status: 0 ok, 1 error, 2 timed out before COUNT SDUs, 3 verification failures.
 *
 * Test pattern (docs/DEVICE.md, "Test pattern"), SDU number seq on channel ch, SIZE bytes:
 *   byte[i] = (i + 7 * seq + 13 * ch) mod 256             for every i, then, if SIZE >= 8:
 *   bytes 0..3 = seq as le32, bytes 4..7 = ch as le32     (overriding the first 8 bytes)
 * seq counts from -s (default 0) and increments by one per SDU, modulo 2^32.
 * crc32: the IEEE/zlib CRC-32 (reflected poly 0xEDB88320, init and final xor 0xFFFFFFFF) of the
 * concatenation of all SDU payloads in the order written (send) or read (recv, echo).
 * recv verifies each SDU: with SIZE >= 8 it takes seq from the SDU (a jump counts as a gap and
 * the receiver resynchronises), below 8 it assumes the next expected seq.
 */
#define _GNU_SOURCE
#include <limits.h>

#define PERF_PROG "vmpi-perf"
#define PERF_USAGE \
	"usage: vmpi-perf [-t MS] [-s SEQ] [-w WINDOW] [-b READBUF] [-d MS] MODE ARGS\n" \
	"  send DEV CHANNEL SIZE COUNT\n" \
	"  recv DEV CHANNEL SIZE|any COUNT\n" \
	"  echo DEV CHANNEL [COUNT]\n" \
	"  loop DEV CHANNEL SIZE COUNT      (-w WINDOW)\n" \
	"  dump DEV CHANNEL [COUNT]\n" \
	"  raw  DEV CHANNEL HEX|@N|-\n" \
	"  info DEV\n"
#include "perf-common.h"

static const char *dev;
static uint32_t channel;
static int timeout_ms;
static uint32_t start_seq;
static unsigned int window = 1;
static size_t rbuf_size;
static unsigned int delay_ms;

/* Read buffer size: -b, or the device's max SDU. */
static size_t rbuf_cap(const struct vmpi_info *info)
{
	size_t cap = rbuf_size ? rbuf_size : info->max_sdu;

	return cap ? cap : 1;
}

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t n = 0; n < 256; n++) {
		uint32_t c = n;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[n] = c;
	}
}

/* Running CRC: pass the previous return value (0 to start). */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

static uint32_t get_le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static void fill_pattern(uint8_t *p, size_t size, uint32_t ch, uint32_t seq)
{
	uint8_t base = (uint8_t)(7u * seq + 13u * ch);

	for (size_t i = 0; i < size; i++)
		p[i] = (uint8_t)(i + base);
	if (size >= 8) {
		put_le32(p, seq);
		put_le32(p + 4, ch);
	}
}

/* 0 if p[0..size) is the pattern for (ch, seq). */
static int check_pattern(const uint8_t *p, size_t size, uint32_t ch, uint32_t seq)
{
	uint8_t base = (uint8_t)(7u * seq + 13u * ch);
	size_t i = 0;

	if (size >= 8) {
		if (get_le32(p) != seq || get_le32(p + 4) != ch)
			return -1;
		i = 8;
	}
	for (; i < size; i++)
		if (p[i] != (uint8_t)(i + base))
			return -1;
	return 0;
}

/* WHERE of the READY, RESULT and ERROR lines: "dev=DEV channel=CHANNEL". */
static const char *where(void)
{
	static char buf[PATH_MAX + 32];

	snprintf(buf, sizeof(buf), "dev=%s channel=%" PRIu32, dev ? dev : "-", channel);
	return buf;
}

static int fail(const char *op, int err)
{
	return perf_error(where(), op, err);
}

/* Open DEV and, if bind, bind it to the channel. Returns the fd or -1 (error printed). */
static int open_dev(int bind, int flags, struct vmpi_info *info)
{
	return perf_vmpi_open(dev, bind ? &channel : NULL, flags, info, where());
}

/* Wait until fd is readable. 0 ready, 1 timed out, -1 error (printed). */
static int wait_readable(int fd)
{
	int r = perf_wait_readable(fd, timeout_ms > 0 ? timeout_ms : -1);

	if (r < 0) {
		fail("poll", errno);
		return -1;
	}
	return r == 0;
}

/* Read one SDU (blocking with the -t idle timeout). Returns length, -2 timeout, -1 error. */
static ssize_t read_sdu(int fd, uint8_t *buf, size_t cap)
{
	for (;;) {
		ssize_t n = read(fd, buf, cap);
		int r;

		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN) {
			fail("read", errno);
			return -1;
		}
		r = wait_readable(fd);
		if (r)
			return r > 0 ? -2 : -1;
	}
}

static void result(const char *extra, uint64_t sdus, uint64_t bytes, double secs, uint32_t crc,
		   const char *status)
{
	char crc_extra[256];

	snprintf(crc_extra, sizeof(crc_extra), " crc32=0x%08" PRIx32 "%s", crc, extra);
	perf_result(where(), "sdus", "sdus_per_s", sdus, bytes, secs, crc_extra, status);
}

static int do_send(size_t size, uint64_t count)
{
	struct vmpi_info info;
	uint64_t i, bytes = 0;
	uint32_t crc = 0;
	double t0 = 0, t1 = 0;
	uint8_t *buf;
	int fd;

	fd = open_dev(1, 0, &info);
	if (fd < 0)
		return 1;
	buf = malloc(size ? size : 1);
	if (!buf)
		return fail("malloc", ENOMEM);
	for (i = 0; i < count; i++) {
		uint32_t seq = start_seq + (uint32_t)i;
		ssize_t n;

		fill_pattern(buf, size, channel, seq);
		if (i == 0)
			t0 = perf_now();
		do {
			n = write(fd, buf, size);
		} while (n < 0 && errno == EINTR);
		if (n < 0)
			return fail("write", errno);
		crc = crc32_update(crc, buf, size);
		bytes += size;
	}
	t1 = perf_now();
	result("", count, bytes, count ? t1 - t0 : 0, crc, "ok");
	close(fd);
	return 0;
}

static int do_recv(long size, uint64_t count)
{
	uint64_t got = 0, bytes = 0, errors = 0, badlen = 0, gaps = 0;
	uint32_t crc = 0, expect = start_seq;
	double t0 = 0, t1 = 0;
	struct vmpi_info info;
	const char *status = "ok";
	char extra[160];
	uint8_t *buf;
	int fd;

	fd = open_dev(1, O_NONBLOCK, &info);
	if (fd < 0)
		return 1;
	buf = malloc(rbuf_cap(&info));
	if (!buf)
		return fail("malloc", ENOMEM);
	perf_ready(where());
	if (delay_ms)
		usleep(delay_ms * 1000u);
	while (got < count) {
		ssize_t n = read_sdu(fd, buf, rbuf_cap(&info));
		uint32_t seq = expect;

		if (n == -1)
			return 1;
		if (n == -2) {
			status = "timeout";
			break;
		}
		t1 = perf_now();
		if (got == 0)
			t0 = t1;
		if (size >= 0 && n != size)
			badlen++;
		if (n >= 8) {
			seq = get_le32(buf);
			if (seq != expect)
				gaps++;
		}
		if (check_pattern(buf, n, channel, seq))
			errors++;
		expect = seq + 1;
		crc = crc32_update(crc, buf, n);
		bytes += n;
		got++;
	}
	if (!strcmp(status, "ok") && (errors || badlen || gaps))
		status = "verify-failed";
	snprintf(extra, sizeof(extra), " errors=%" PRIu64 " badlen=%" PRIu64 " gaps=%" PRIu64,
		 errors, badlen, gaps);
	/* Throughput over the inter-arrival span; a single SDU has none. */
	result(extra, got, bytes, got > 1 ? t1 - t0 : 0, crc, status);
	close(fd);
	if (got < count)
		return 2;
	return errors || badlen || gaps ? 3 : 0;
}

/* Write one SDU on a non-blocking fd, waiting for ring space. 0 or -1 (error printed). */
static int write_sdu(int fd, const uint8_t *buf, size_t n)
{
	while (write(fd, buf, n) < 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };

		if (errno != EAGAIN && errno != EINTR) {
			fail("write", errno);
			return -1;
		}
		if (errno == EAGAIN)
			poll(&pfd, 1, 1000);
	}
	return 0;
}

static int do_echo(uint64_t count)
{
	uint64_t got = 0, bytes = 0;
	double t0 = 0, t1 = 0;
	struct vmpi_info info;
	const char *status = "ok";
	uint32_t crc = 0;
	uint8_t *buf;
	int fd;

	fd = open_dev(1, O_NONBLOCK, &info);
	if (fd < 0)
		return 1;
	buf = malloc(rbuf_cap(&info));
	if (!buf)
		return fail("malloc", ENOMEM);
	perf_ready(where());
	while (!count || got < count) {
		ssize_t n = read_sdu(fd, buf, rbuf_cap(&info));

		if (n == -1)
			return 1;
		if (n == -2) {
			status = "timeout";
			break;
		}
		t1 = perf_now();
		if (got == 0)
			t0 = t1;
		/* The fd is non-blocking (for the read timeout). */
		if (write_sdu(fd, buf, n))
			return 1;
		crc = crc32_update(crc, buf, n);
		bytes += n;
		got++;
	}
	result("", got, bytes, got > 1 ? t1 - t0 : 0, crc, status);
	close(fd);
	return count && got < count ? 2 : 0;
}

static int do_loop(size_t size, uint64_t count)
{
	uint64_t sent = 0, got = 0, bytes = 0, errors = 0, badlen = 0, gaps = 0;
	uint32_t crc = 0, expect = start_seq;
	double t0, t1, *tsend, rtt_sum = 0, rtt_max = 0;
	const char *status = "ok";
	struct vmpi_info info;
	uint8_t *out, *in;
	char extra[200];
	int fd;

	fd = open_dev(1, O_NONBLOCK, &info);
	if (fd < 0)
		return 1;
	out = malloc(size ? size : 1);
	in = malloc(rbuf_cap(&info));
	tsend = calloc(window ? window : 1, sizeof(double));
	if (!out || !in || !tsend)
		return fail("malloc", ENOMEM);
	if (!window)
		window = 1;
	t0 = perf_now();
	while (got < count) {
		while (sent < count && sent - got < window) {
			fill_pattern(out, size, channel, start_seq + (uint32_t)sent);
			tsend[sent % window] = perf_now();
			if (write_sdu(fd, out, size))
				return 1;
			sent++;
		}
		ssize_t n = read_sdu(fd, in, rbuf_cap(&info));
		uint32_t seq = expect;
		double rtt;

		if (n == -1)
			return 1;
		if (n == -2) {
			status = "timeout";
			break;
		}
		rtt = perf_now() - tsend[got % window];
		rtt_sum += rtt;
		if (rtt > rtt_max)
			rtt_max = rtt;
		if ((size_t)n != size)
			badlen++;
		if (n >= 8) {
			seq = get_le32(in);
			if (seq != expect)
				gaps++;
		}
		if (check_pattern(in, n, channel, seq))
			errors++;
		expect = seq + 1;
		crc = crc32_update(crc, in, n);
		bytes += n;
		got++;
	}
	t1 = perf_now();
	if (!strcmp(status, "ok") && (errors || badlen || gaps))
		status = "verify-failed";
	snprintf(extra, sizeof(extra), " errors=%" PRIu64 " badlen=%" PRIu64 " gaps=%" PRIu64
		 " rtt_avg_us=%.1f rtt_max_us=%.1f", errors, badlen, gaps,
		 got ? rtt_sum / got * 1e6 : 0, rtt_max * 1e6);
	result(extra, got, bytes, t1 - t0, crc, status);
	close(fd);
	if (got < count)
		return 2;
	return errors || badlen || gaps ? 3 : 0;
}

static int do_dump(uint64_t count)
{
	struct vmpi_info info;
	uint64_t got = 0, bytes = 0;
	uint32_t crc = 0;
	uint8_t *buf;
	int fd;

	fd = open_dev(1, O_NONBLOCK, &info);
	if (fd < 0)
		return 1;
	buf = malloc(rbuf_cap(&info));
	if (!buf)
		return fail("malloc", ENOMEM);
	perf_ready(where());
	while (got < count) {
		ssize_t n = read_sdu(fd, buf, rbuf_cap(&info));

		if (n == -1)
			return 1;
		if (n == -2)
			break;
		printf("SDU channel=%" PRIu32 " n=%" PRIu64 " len=%zd hex=", channel, got, n);
		for (ssize_t i = 0; i < n; i++)
			printf("%02x", buf[i]);
		printf("\n");
		crc = crc32_update(crc, buf, n);
		bytes += n;
		got++;
	}
	result("", got, bytes, 0, crc, got < count ? "timeout" : "ok");
	close(fd);
	return got < count ? 2 : 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int do_raw(const char *data)
{
	size_t len = 0, cap = 4096;
	uint8_t *buf = malloc(cap);
	ssize_t n;
	int fd;

	if (!buf)
		return fail("malloc", ENOMEM);
	if (data[0] == '@') {
		len = parse_num(data + 1, "size");
		buf = realloc(buf, len ? len : 1);
		if (!buf)
			return fail("malloc", ENOMEM);
		fill_pattern(buf, len, channel, start_seq);
	} else if (!strcmp(data, "-")) {
		while ((n = read(0, buf + len, cap - len)) > 0) {
			len += n;
			if (len == cap) {
				cap *= 2;
				buf = realloc(buf, cap);
				if (!buf)
					return fail("malloc", ENOMEM);
			}
		}
	} else {
		size_t sl = strlen(data);

		if (sl % 2)
			usage();
		buf = realloc(buf, sl / 2 + 1);
		for (size_t i = 0; i < sl; i += 2) {
			int hi = hexval(data[i]), lo = hexval(data[i + 1]);

			if (hi < 0 || lo < 0)
				usage();
			buf[len++] = hi << 4 | lo;
		}
	}
	fd = open_dev(1, 0, NULL);
	if (fd < 0)
		return 1;
	n = write(fd, buf, len);
	if (n < 0)
		return fail("write", errno);
	result("", 1, len, 0, crc32_update(0, buf, len), "ok");
	close(fd);
	return 0;
}

static int do_info(void)
{
	struct vmpi_info i;
	int fd = open_dev(0, 0, &i);

	if (fd < 0)
		return 1;
	printf("INFO dev=%s index=%u vmpi_id=%u max_sdu=%u rx_queue_len=%u removed=%u"
	       " rx_frames=%llu rx_bytes=%llu tx_frames=%llu tx_bytes=%llu"
	       " rx_drops_unbound=%llu rx_drops_full=%llu rx_malformed=%llu rx_drops_nomem=%llu"
	       " rx_drops_stalled=%llu\n",
	       dev, i.index, i.vmpi_id, i.max_sdu, i.rx_queue_len,
	       !!(i.flags & VMPI_INFO_F_REMOVED),
	       (unsigned long long)i.stats.rx_frames, (unsigned long long)i.stats.rx_bytes,
	       (unsigned long long)i.stats.tx_frames, (unsigned long long)i.stats.tx_bytes,
	       (unsigned long long)i.stats.rx_drops_unbound,
	       (unsigned long long)i.stats.rx_drops_full,
	       (unsigned long long)i.stats.rx_malformed,
	       (unsigned long long)i.stats.rx_drops_nomem,
	       (unsigned long long)i.stats.rx_drops_stalled);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct perf_opt opts[] = {
		PERF_OPT('t', "timeout", timeout_ms),
		PERF_OPT('s', "sequence number", start_seq),
		PERF_OPT('w', "window", window),
		PERF_OPT('b', "buffer size", rbuf_size),
		PERF_OPT('d', "delay", delay_ms),
	};
	const char *mode;

	setvbuf(stdout, NULL, _IOLBF, 0);
	crc_init();
	argv = perf_args(&argc, argv, opts, sizeof(opts) / sizeof(opts[0]), 2);
	mode = perf_mode;
	dev = argv[1];
	if (!strcmp(mode, "info"))
		return do_info();
	if (argc < 3)
		usage();
	channel = parse_num(argv[2], "channel");
	if (!strcmp(mode, "send") && argc == 5)
		return do_send(parse_num(argv[3], "size"), parse_num(argv[4], "count"));
	if (!strcmp(mode, "recv") && argc == 5)
		return do_recv(strcmp(argv[3], "any") ? (long)parse_num(argv[3], "size") : -1,
			       parse_num(argv[4], "count"));
	if (!strcmp(mode, "loop") && argc == 5)
		return do_loop(parse_num(argv[3], "size"), parse_num(argv[4], "count"));
	if (!strcmp(mode, "echo") && argc <= 4)
		return do_echo(argc == 4 ? parse_num(argv[3], "count") : 0);
	if (!strcmp(mode, "dump") && argc <= 4)
		return do_dump(argc == 4 ? parse_num(argv[3], "count") : 1);
	if (!strcmp(mode, "raw") && argc == 4)
		return do_raw(argv[3]);
	usage();
}
