/* SPDX-License-Identifier: GPL-2.0 */
/*
 * perf-common.h - what the guest tools vmpi-perf and udp-goodput share: the clock, the command
 * line (options, MODE), opening a VMPI channel, waiting for input, and the machine-readable lines
 * they print on stdout, which tests and benches parse (test/helpers/pattern.ts parseResults):
 *
 *   READY mode=MODE WHERE
 *   RESULT mode=MODE WHERE COUNT=n bytes=n seconds=s mbps=m RATE=r[ EXTRA] status=S
 *   ERROR mode=MODE [WHERE ]op=OP errno=NAME msg="..."
 *
 * WHERE names the endpoint ("dev=/dev/vmpi0 channel=3", "port=5001"); COUNT and RATE are the
 * tool's names for units and units per second (sdus/sdus_per_s, datagrams/pps).
 *
 * Static inline functions for single-file tools: the file that includes this defines PERF_PROG
 * (its name, for messages) and PERF_USAGE (its usage text) first, and gets usage() and
 * parse_num() under the names the tools have always used.
 */
#ifndef VMPI_PERF_COMMON_H
#define VMPI_PERF_COMMON_H

#if !defined(PERF_PROG) || !defined(PERF_USAGE)
#error "define PERF_PROG and PERF_USAGE before including perf-common.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "vmpi_uapi.h"

/* MODE, the first operand (set by perf_args); "?" before. */
static const char *perf_mode = "?";

/* Monotonic time in seconds. */
static inline double perf_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline __attribute__((noreturn)) void usage(void)
{
	fputs(PERF_USAGE, stderr);
	exit(1);
}

/* A whole unsigned number (decimal, 0x hex or 0 octal); anything else is a usage error. */
static inline unsigned long parse_num(const char *s, const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || !*s || *end) {
		fprintf(stderr, PERF_PROG ": bad %s '%s'\n", what, s);
		usage();
	}
	return v;
}

/* One option with a numeric value: -CH N stored in var (a 4- or 8-byte integer). */
struct perf_opt {
	char ch;
	const char *what;
	void *var;
	size_t size;
};

#define PERF_OPT(ch, what, var) { (ch), (what), &(var), sizeof(var) }

/*
 * Parse the options in opts (and -h: usage), then at least min_operands operands, the first of
 * them MODE (perf_mode). Options stop at the first operand. Returns the operands; *argc their
 * number.
 */
static inline char **perf_args(int *argc, char **argv, const struct perf_opt *opts, size_t nopts,
			       int min_operands)
{
	char optstring[64] = "+";
	size_t len = 1;
	int opt;

	for (size_t i = 0; i < nopts && len + 3 < sizeof(optstring); i++) {
		optstring[len++] = opts[i].ch;
		optstring[len++] = ':';
	}
	optstring[len++] = 'h';
	optstring[len] = '\0';
	while ((opt = getopt(*argc, argv, optstring)) != -1) {
		const struct perf_opt *o = NULL;
		unsigned long v;

		for (size_t i = 0; i < nopts && !o; i++)
			if (opts[i].ch == opt)
				o = &opts[i];
		if (!o)
			usage();
		v = parse_num(optarg, o->what);
		if (o->size == sizeof(uint64_t)) {
			uint64_t v64 = v;

			memcpy(o->var, &v64, sizeof(v64));
		} else {
			uint32_t v32 = v;	/* as an assignment to the (int or unsigned) var */

			memcpy(o->var, &v32, sizeof(v32));
		}
	}
	*argc -= optind;
	argv += optind;
	if (*argc < min_operands || *argc < 1)
		usage();
	perf_mode = argv[0];
	return argv;
}

/* "ERROR mode=... [WHERE ]op=OP errno=NAME msg=..."; returns 1, the exit status for errors. */
static inline int perf_error(const char *where, const char *op, int err)
{
	const char *name = strerrorname_np(err);

	printf("ERROR mode=%s %s%sop=%s errno=%s msg=\"%s\"\n", perf_mode, where ? where : "",
	       where ? " " : "", op, name ? name : "?", strerror(err));
	fflush(stdout);
	return 1;
}

/* "READY mode=... WHERE": bound, about to wait for the first SDU / datagram. */
static inline void perf_ready(const char *where)
{
	printf("READY mode=%s %s\n", perf_mode, where);
	fflush(stdout);
}

/*
 * The RESULT line: count units (count_key=) and bytes in secs, their goodput (10^6 bits per
 * second) and rate (rate_key=); extra (" key=value" ...) goes before status.
 */
static inline void perf_result(const char *where, const char *count_key, const char *rate_key,
			       uint64_t count, uint64_t bytes, double secs, const char *extra,
			       const char *status)
{
	double mbps = secs > 0 ? bytes * 8 / secs / 1e6 : 0;
	double rate = secs > 0 ? count / secs : 0;

	printf("RESULT mode=%s %s %s=%" PRIu64 " bytes=%" PRIu64 " seconds=%.6f mbps=%.2f %s=%.0f"
	       "%s status=%s\n", perf_mode, where, count_key, count, bytes, secs, mbps, rate_key,
	       rate, extra, status);
	fflush(stdout);
}

/*
 * Open a VMPI device (O_RDWR | O_CLOEXEC | flags), bind it to *channel unless channel is NULL,
 * and read its info into *info unless info is NULL. Returns the fd, or -1 with the ERROR line
 * (op=open|bind|info, WHERE where) printed.
 */
static inline int perf_vmpi_open(const char *dev, uint32_t *channel, int flags,
				 struct vmpi_info *info, const char *where)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC | flags);
	const char *op = NULL;

	if (fd < 0) {
		perf_error(where, "open", errno);
		return -1;
	}
	if (channel && ioctl(fd, VMPI_IOC_BIND, channel) < 0)
		op = "bind";
	else if (info && ioctl(fd, VMPI_IOC_GET_INFO, info) < 0)
		op = "info";
	if (op) {
		perf_error(where, op, errno);
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Wait until fd is readable (timeout_ms < 0: for ever), through EINTR. 1 readable, 0 timed out,
 * -1 error (errno).
 */
static inline int perf_wait_readable(int fd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int r;

	do {
		r = poll(&pfd, 1, timeout_ms);
	} while (r < 0 && errno == EINTR);
	return r;
}

#endif /* VMPI_PERF_COMMON_H */
