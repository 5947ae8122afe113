// SPDX-License-Identifier: GPL-2.0
/*
 * vmpi-perf - exercise a VMPI channel from inside the guest (/dev/vmpiN).
 *
 *   vmpi-perf [-t MS] [-s SEQ] send DEV CHANNEL SIZE COUNT   write COUNT pattern SDUs of SIZE bytes
 *   vmpi-perf [-t MS] [-s SEQ] [-d MS] [-p MS] recv DEV CHANNEL SIZE COUNT   read COUNT SDUs, verify
 *                                                            (SIZE "any": do not check lengths)
 *   vmpi-perf [-t MS] echo DEV CHANNEL [COUNT]               write every SDU back (COUNT 0: forever)
 *   vmpi-perf [-t MS] [-s SEQ] [-w N] loop DEV CHANNEL SIZE COUNT
 *                                     send COUNT pattern SDUs and read each back on the same file
 *                                     (for a host that echoes), at most N (default 1) in flight;
 *                                     verifies like recv and reports the round-trip time
 *   vmpi-perf [-t MS] [-s SEQ] [-w N] [-g MS] stream DEV CHANNEL SIZE COUNT
 *                                     like loop, but loss-tolerant (for a host that echoes and
 *                                     may lose, duplicate or stall SDUs, e.g. across a restart):
 *                                     see "stream" below
 *   vmpi-perf [-t MS] dump DEV CHANNEL [COUNT]               print SDUs as hex (COUNT default 1)
 *   vmpi-perf [-s SEQ] raw DEV CHANNEL DATA                  write one SDU: DATA is hex ("" = empty),
 *                                                            "@N" = N pattern bytes, "-" = stdin
 *   vmpi-perf info DEV                                        print device info and counters
 *
 * -t MS: give up after MS milliseconds without an SDU (0, the default: wait forever).
 * -d MS: recv only: sleep MS milliseconds after READY before the first read (a slow or stuck
 *    reader: the driver holds the host back, then after rx_stall_ms drops, see docs/DEVICE.md).
 * -p MS: recv only: sleep MS milliseconds after each SDU read (a slow reader that keeps reading).
 * -s SEQ: sequence number of the first SDU (default 0).
 * -w N: loop and stream window (SDUs in flight, default 1).
 * -g MS: stream only: with the window full and nothing received for MS milliseconds (default
 *    100), the SDUs in flight are written off as lost and sending goes on.
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
 *
 * stream: sends COUNT pattern SDUs (SIZE >= 8: each carries its seq) with at most -w in flight
 * and reads the echoes, never waiting on a lost one: when the window is full and nothing arrived
 * for -g MS, everything in flight is written off and sending goes on; an SDU written off that
 * still arrives counts as received (a seen-bitmap over the COUNT seqs keeps the tally). After the
 * last send it waits for the missing ones until -t MS (default 1000 in this mode) pass without an
 * SDU. While it waits for room to write it keeps reading, so a full rx queue never blocks it; when
 * the tx ring stays full (no write and no arrival) for that long too, the device stopped taking
 * SDUs: it stops sending and ends with status=tx-stalled (exit status 2) and tx_stall_ms= in the
 * RESULT line, rather than waiting on for ever.
 * Its RESULT line, besides bytes/seconds/mbps (unique SDUs, first send to last arrival):
 *   sent=  SDUs written              received=  SDUs read (every read, duplicates too)
 *   unique= distinct seqs received   lost=  COUNT - unique   dup=  received - unique - errors
 *   reordered= SDUs that arrived after a higher seq had (first arrivals only)
 *   max_gap_ms= longest time between two consecutive arrivals, gap_at_ms= when it began (from the
 *   first send; the stall the guest saw), write_offs= times the window was written off,
 *   errors= SDUs that do not match the pattern or carry a seq that was never sent,
 *   badlen= SDUs of the wrong length, sdus_per_s= unique SDUs per second.
 *   status: ok, or lost (exit 2), dup or verify-failed (exit 3); verify-failed wins over lost,
 *   lost over dup.
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
	"  stream DEV CHANNEL SIZE COUNT    (-w WINDOW, -g GAP_MS; SIZE >= 8)\n" \
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
static unsigned int pace_ms;
static unsigned int gap_ms = 100;

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
		if (pace_ms && got < count)
			usleep(pace_ms * 1000u);
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

/* The state of one stream run (do_stream). */
struct stream {
	uint64_t count, sent, received, unique, errors, badlen, reordered, write_offs;
	/* SDUs written off as lost and not seen since; seqs below mark were written off. */
	uint64_t written_off, mark;
	uint8_t *seen;			/* bit per seq index 0..count-1 */
	int64_t highest;		/* highest seq index received, -1 before the first */
	double t0, last_rx, last_event, max_gap, gap_at;
	size_t size;
};

static uint64_t stream_in_flight(const struct stream *st)
{
	return st->sent - st->unique - st->written_off;
}

/* Account one SDU read at time now. */
static void stream_take(struct stream *st, const uint8_t *buf, ssize_t n, double now)
{
	uint64_t idx;

	st->received++;
	if (st->last_rx > 0 && now - st->last_rx > st->max_gap) {
		st->max_gap = now - st->last_rx;
		st->gap_at = st->last_rx - st->t0;
	}
	st->last_rx = st->last_event = now;
	if ((size_t)n != st->size)
		st->badlen++;
	if (n < 8) {
		st->errors++;
		return;
	}
	idx = (uint32_t)(get_le32(buf) - start_seq);
	if (idx >= st->sent || check_pattern(buf, n, channel, start_seq + (uint32_t)idx)) {
		st->errors++;
		return;
	}
	if (st->seen[idx / 8] & (1u << (idx % 8)))
		return;			/* a duplicate: received - unique */
	st->seen[idx / 8] |= 1u << (idx % 8);
	st->unique++;
	if (idx < st->mark && st->written_off)
		st->written_off--;	/* written off, then arrived after all */
	if ((int64_t)idx < st->highest)
		st->reordered++;
	else
		st->highest = idx;
}

/* Read every SDU waiting (non-blocking fd). 0, or -1 on an error (printed). */
static int stream_read_all(int fd, struct stream *st, uint8_t *buf, size_t cap)
{
	for (;;) {
		ssize_t n = read(fd, buf, cap);

		if (n >= 0) {
			stream_take(st, buf, n, perf_now());
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			return 0;
		fail("read", errno);
		return -1;
	}
}

/*
 * Wait up to ms for the fd to become readable (and, if want_out, writable), then read what is
 * there. Returns 1 if writable, 0 otherwise, -1 on an error (printed).
 */
static int stream_wait(int fd, struct stream *st, uint8_t *buf, size_t cap, int want_out, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN | (want_out ? POLLOUT : 0) };
	int r = poll(&pfd, 1, ms < 0 ? 0 : ms);

	if (r < 0 && errno != EINTR) {
		fail("poll", errno);
		return -1;
	}
	if (r > 0 && (pfd.revents & POLLIN) && stream_read_all(fd, st, buf, cap))
		return -1;
	return r > 0 && (pfd.revents & POLLOUT);
}

static int do_stream(size_t size, uint64_t count)
{
	double idle = (timeout_ms > 0 ? timeout_ms : 1000) / 1e3, gap = gap_ms / 1e3, t1;
	double last_tx, tx_stall = 0;
	struct stream st = { .count = count, .size = size, .highest = -1 };
	const char *status = "ok";
	struct vmpi_info info;
	uint64_t lost, dup;
	uint8_t *out, *in;
	char extra[400];
	size_t cap;
	int fd;

	if (size < 8) {
		fprintf(stderr, PERF_PROG ": stream needs SIZE >= 8 (each SDU carries its seq)\n");
		usage();
	}
	if (!window)
		window = 1;
	fd = open_dev(1, O_NONBLOCK, &info);
	if (fd < 0)
		return 1;
	cap = rbuf_cap(&info);
	out = malloc(size);
	in = malloc(cap);
	st.seen = calloc(count / 8 + 1, 1);
	if (!out || !in || !st.seen)
		return fail("malloc", ENOMEM);
	st.t0 = st.last_event = last_tx = perf_now();
	while (st.sent < count) {
		double now = perf_now();

		if (stream_in_flight(&st) >= window) {
			/* Window full: wait for an echo, or write the window off after gap. */
			if (now - st.last_event >= gap) {
				st.written_off = st.sent - st.unique;
				st.mark = st.sent;
				st.write_offs++;
				st.last_event = now;
				continue;
			}
			if (stream_wait(fd, &st, in, cap, 0, (int)((st.last_event + gap - now) * 1e3) + 1) < 0)
				return 1;
			continue;
		}
		fill_pattern(out, size, channel, start_seq + (uint32_t)st.sent);
		if (write(fd, out, size) >= 0) {
			st.sent++;
			last_tx = perf_now();
			if (st.sent == 1)
				st.t0 = st.last_event = last_tx;
			if (stream_read_all(fd, &st, in, cap))
				return 1;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return fail("write", errno);
		/* The tx ring is full: wait for room, reading meanwhile (bounded: see "stream" above). */
		if (now - last_tx >= idle && now - st.last_event >= idle) {
			tx_stall = now - last_tx;
			break;
		}
		if (stream_wait(fd, &st, in, cap, 1, 100) < 0)
			return 1;
	}
	/* Stragglers: until every seq is in, or idle passes without an SDU. */
	st.last_event = perf_now();
	while (st.unique < count) {
		double now = perf_now();

		if (now - st.last_event >= idle)
			break;
		if (stream_wait(fd, &st, in, cap, 0, (int)((st.last_event + idle - now) * 1e3) + 1) < 0)
			return 1;
	}
	t1 = st.last_rx > 0 ? st.last_rx : perf_now();
	lost = count - st.unique;
	dup = st.received - st.errors - st.unique;
	if (st.errors || st.badlen)
		status = "verify-failed";
	else if (lost)
		status = "lost";
	else if (dup)
		status = "dup";
	if (tx_stall > 0)
		status = "tx-stalled";
	snprintf(extra, sizeof(extra), " sent=%" PRIu64 " received=%" PRIu64 " lost=%" PRIu64
		 " dup=%" PRIu64 " reordered=%" PRIu64 " max_gap_ms=%.1f gap_at_ms=%.1f"
		 " write_offs=%" PRIu64 " errors=%" PRIu64 " badlen=%" PRIu64 " tx_stall_ms=%.1f",
		 st.sent, st.received, lost, dup, st.reordered, st.max_gap * 1e3, st.gap_at * 1e3,
		 st.write_offs, st.errors, st.badlen, tx_stall * 1e3);
	perf_result(where(), "unique", "sdus_per_s", st.unique, st.unique * size,
		    st.unique ? t1 - st.t0 : 0, extra, status);
	close(fd);
	if (st.errors || st.badlen)
		return 3;
	return lost ? 2 : dup ? 3 : 0;
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
		PERF_OPT('p', "pace", pace_ms),
		PERF_OPT('g', "gap", gap_ms),
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
	if (!strcmp(mode, "stream") && argc == 5)
		return do_stream(parse_num(argv[3], "size"), parse_num(argv[4], "count"));
	if (!strcmp(mode, "echo") && argc <= 4)
		return do_echo(argc == 4 ? parse_num(argv[3], "count") : 0);
	if (!strcmp(mode, "dump") && argc <= 4)
		return do_dump(argc == 4 ? parse_num(argv[3], "count") : 1);
	if (!strcmp(mode, "raw") && argc == 4)
		return do_raw(argv[3]);
	usage();
}
