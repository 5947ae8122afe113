// SPDX-License-Identifier: GPL-2.0
/*
 * vmpi-shutdown-check - check VMPI_IOC_SHUTDOWN on a channel from inside the guest.
 *
 *   vmpi-shutdown-check [-t MS] [-s SEQ] DEV CHANNEL COUNT [EXTRA]
 *
 * Binds a file to CHANNEL and waits until COUNT test-pattern SDUs (docs/DEVICE.md, "Test
 * pattern", seq from SEQ, at least 8 bytes) are queued on it (-t MS: give up after MS ms), then
 * 0.2 s more so that a frame sent behind them parks if the queue is full. Then, as the IPC daemon
 * revoking a flow would: shuts the file down through a dup, and checks that
 *  - a second file binds CHANNEL at once, SHUTDOWN again is 0, GET_INFO has F_SHUTDOWN and not
 *    F_BOUND and still counts the COUNT SDUs, poll reports IN|OUT|HUP without ERR, write and
 *    BIND fail with ESHUTDOWN, NEXT_LEN gives the first SDU's length;
 *  - the COUNT SDUs read back in order, then read and NEXT_LEN fail with ESHUTDOWN;
 *  - EXTRA frames the host sent behind them reach the second file or count as unbound within
 *    5 s (the parked frame is not stuck until rx_stall_ms); those on the second file come later;
 *  - a reader blocked in read() and one blocked in poll() on the second file (blocking, empty)
 *    are woken by its shutdown with ESHUTDOWN and IN|HUP;
 *  - a file never bound can be shut down, then BIND and read fail with ESHUTDOWN.
 * Prints a FAIL line per failed check and at the end
 *   RESULT mode=shutdown dev=DEV channel=CH sdus=COUNT bytes=B errors=0 late=EXTRA late_file2=N
 *          late_unbound=M late_ms=T failures=0 status=ok|timeout|verify-failed
 * or ERROR mode=shutdown ... op=open|bind|info errno=... msg="...".
 * Exit status: 0 ok, 1 error, 2 timeout, 3 a check failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmpi_uapi.h"

#define ERR_OF(call)	((call) < 0 ? errno : 0)

static const char *dev;
static uint32_t channel;
static unsigned int failures;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t get_le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

/* 0 if p[0..size) is the test pattern for SDU seq on channel: size >= 8, seq and channel first. */
static int check_pattern(const uint8_t *p, ssize_t size, uint32_t seq)
{
	uint8_t base = (uint8_t)(7u * seq + 13u * channel);

	if (size < 8 || get_le32(p) != seq || get_le32(p + 4) != channel)
		return -1;
	for (ssize_t i = 8; i < size; i++)
		if (p[i] != (uint8_t)(i + base))
			return -1;
	return 0;
}

static const char *errname(int err)
{
	const char *name = err > 0 ? strerrorname_np(err) : NULL;

	return err < 0 ? "wrong-result" : !err ? "0" : name ? name : "?";
}

static int fail(const char *op, int err)
{
	printf("ERROR mode=shutdown dev=%s channel=%" PRIu32 " op=%s errno=%s msg=\"%s\"\n", dev,
	       channel, op, errname(err), strerror(err));
	return 1;
}

/* One check: err (an errno, 0 for success, -1 for a wrong result) must be want. */
static void want_err(const char *what, int err, int want)
{
	if (err == want)
		return;
	failures++;
	printf("FAIL mode=shutdown check=%s errno=%s want=%s\n", what, errname(err), errname(want));
}

static int open_bound(int bind, int flags)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC | flags);

	if (fd < 0)
		return fail("open", errno), -1;
	if (bind && ioctl(fd, VMPI_IOC_BIND, &channel) < 0)
		return fail("bind", errno), -1;
	return fd;
}

/* A child blocked in read() (or poll()) on fd; exits 0 if woken with ESHUTDOWN (IN|HUP). */
static pid_t blocked_child(int fd, int use_poll, void *buf, size_t cap)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	pid_t pid = fork();

	if (pid)
		return pid;
	alarm(20);
	if (use_poll)
		_exit(poll(&pfd, 1, -1) != 1 ||
		      (pfd.revents & (POLLIN | POLLHUP | POLLERR)) != (POLLIN | POLLHUP));
	_exit(read(fd, buf, cap) >= 0 || errno != ESHUTDOWN);
}

/* Wait up to 5 s for process pid to sleep (state S in /proc/PID/stat). */
static void wait_sleeping(pid_t pid)
{
	char path[64], st[512], *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (int i = 0; i < 500; i++, usleep(10000)) {
		f = fopen(path, "r");
		p = f && fgets(st, sizeof(st), f) ? strrchr(st, ')') : NULL;
		if (f)
			fclose(f);
		if (p && p[1] && p[2] == 'S')
			return;
	}
}

int main(int argc, char **argv)
{
	uint64_t bytes = 0, late = 0, unbound0;
	uint32_t got = 0, count, extra = 0, len = 0, seq, next = 0;
	unsigned int errors = 0, timeout_ms = 0;
	struct vmpi_info info, i2;
	struct pollfd pfd;
	double t0, late_s;
	int fd, f2, f3, d, st, opt;
	pid_t kids[2];
	uint8_t *buf;
	size_t cap;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((opt = getopt(argc, argv, "t:s:")) != -1) {
		if (opt == 't')
			timeout_ms = strtoul(optarg, NULL, 0);
		else if (opt == 's')
			next = strtoul(optarg, NULL, 0);
		else
			optind = argc + 1;	/* usage */
	}
	if (argc - optind < 3 || argc - optind > 4) {
		fprintf(stderr, "usage: vmpi-shutdown-check [-t MS] [-s SEQ] DEV CHANNEL COUNT [EXTRA]\n");
		return 1;
	}
	dev = argv[optind];
	channel = strtoul(argv[optind + 1], NULL, 0);
	count = strtoul(argv[optind + 2], NULL, 0);
	if (argc - optind == 4)
		extra = strtoul(argv[optind + 3], NULL, 0);

	fd = open_bound(1, O_NONBLOCK);
	if (fd < 0)
		return 1;
	if (ioctl(fd, VMPI_IOC_GET_INFO, &info) < 0)
		return fail("info", errno);
	cap = info.max_sdu;
	buf = malloc(cap);
	if (!buf)
		return fail("malloc", ENOMEM);
	printf("READY mode=shutdown dev=%s channel=%" PRIu32 "\n", dev, channel);
	for (t0 = now(); info.rx_queued < count; usleep(10000)) {
		if (timeout_ms && (now() - t0) * 1000 > timeout_ms) {
			printf("RESULT mode=shutdown dev=%s channel=%" PRIu32 " sdus=%u status=timeout\n",
			       dev, channel, info.rx_queued);
			return 2;
		}
		if (ioctl(fd, VMPI_IOC_GET_INFO, &info) < 0)
			return fail("info", errno);
	}
	usleep(200000);		/* let a frame park behind a full queue */
	if (ioctl(fd, VMPI_IOC_GET_INFO, &info) < 0)
		return fail("info", errno);
	unbound0 = info.stats.rx_drops_unbound;

	/* The daemon's copy of the file: shut it down there, the channel is free at once. */
	d = dup(fd);
	want_err("shutdown", ERR_OF(ioctl(d, VMPI_IOC_SHUTDOWN)), 0);
	close(d);
	f2 = open_bound(1, 0);
	if (f2 < 0)
		return 1;
	want_err("shutdown-again", ERR_OF(ioctl(fd, VMPI_IOC_SHUTDOWN)), 0);
	want_err("info", ioctl(fd, VMPI_IOC_GET_INFO, &info) < 0 ||
		 (info.flags & (VMPI_INFO_F_SHUTDOWN | VMPI_INFO_F_BOUND)) != VMPI_INFO_F_SHUTDOWN ||
		 info.rx_queued != count ? -1 : 0, 0);
	pfd = (struct pollfd){ .fd = fd, .events = POLLIN | POLLOUT };
	want_err("poll", poll(&pfd, 1, 0) != 1 || (pfd.revents & (POLLIN | POLLOUT | POLLHUP |
		 POLLERR)) != (POLLIN | POLLOUT | POLLHUP) ? -1 : 0, 0);
	want_err("write", ERR_OF(write(fd, buf, 8)), ESHUTDOWN);
	want_err("bind", ERR_OF(ioctl(fd, VMPI_IOC_BIND, &channel)), ESHUTDOWN);
	if (count)
		want_err("next-len", ERR_OF(ioctl(fd, VMPI_IOC_NEXT_LEN, &len)), 0);

	/* The queued SDUs are still there, in order; then the file reads as shut down. */
	for (; got < count; got++) {
		ssize_t n = read(fd, buf, cap);

		if (n < 0) {
			want_err("read", errno, 0);
			break;
		}
		seq = n >= 8 ? get_le32(buf) : next;
		errors += (!got && n != len) + (seq != next) + !!check_pattern(buf, n, seq);
		next = seq + 1;
		bytes += n;
	}
	want_err("read-end", ERR_OF(read(fd, buf, cap)), ESHUTDOWN);
	want_err("next-len-end", ERR_OF(ioctl(fd, VMPI_IOC_NEXT_LEN, &len)), ESHUTDOWN);

	/* Frames behind the queue (one parked) reach the new file or count as unbound, at once. */
	t0 = now();
	do {
		if (ioctl(f2, VMPI_IOC_GET_INFO, &i2) < 0)
			return fail("info", errno);
		late = i2.rx_queued + i2.stats.rx_drops_unbound - unbound0;
	} while (late < extra && now() - t0 < 5 && !usleep(10000));
	late_s = now() - t0;
	want_err("late-frames", late == extra ? 0 : -1, 0);
	for (uint32_t i = 0; i < i2.rx_queued; i++) {
		ssize_t n = read(f2, buf, cap);

		want_err("late-read", n < 8 || get_le32(buf) < next ||
			 check_pattern(buf, n, get_le32(buf)) ? -1 : 0, 0);
		if (n >= 8)
			next = get_le32(buf) + 1;
	}

	/* A reader and a poller blocked on the second file (blocking, now empty) are woken. */
	kids[0] = blocked_child(f2, 0, buf, cap);
	kids[1] = blocked_child(f2, 1, buf, cap);
	wait_sleeping(kids[0]);
	wait_sleeping(kids[1]);
	want_err("shutdown-blocked", ERR_OF(ioctl(f2, VMPI_IOC_SHUTDOWN)), 0);
	for (int i = 0; i < 2; i++)
		want_err(i ? "woken-poll" : "woken-read", waitpid(kids[i], &st, 0) != kids[i] ||
			 !WIFEXITED(st) || WEXITSTATUS(st) ? -1 : 0, 0);

	/* A file never bound. */
	f3 = open_bound(0, 0);
	if (f3 < 0)
		return 1;
	want_err("shutdown-unbound", ERR_OF(ioctl(f3, VMPI_IOC_SHUTDOWN)), 0);
	want_err("bind-unbound", ERR_OF(ioctl(f3, VMPI_IOC_BIND, &channel)), ESHUTDOWN);
	want_err("read-unbound", ERR_OF(read(f3, buf, cap)), ESHUTDOWN);

	printf("RESULT mode=shutdown dev=%s channel=%" PRIu32 " sdus=%u bytes=%" PRIu64
	       " errors=%u late=%" PRIu64 " late_file2=%u late_unbound=%" PRIu64 " late_ms=%.0f"
	       " failures=%u status=%s\n", dev, channel, got, bytes, errors, late, i2.rx_queued,
	       late - i2.rx_queued, late_s * 1000, failures,
	       errors || failures ? "verify-failed" : "ok");
	close(f3);
	close(f2);
	close(fd);
	return errors || failures ? 3 : 0;
}
