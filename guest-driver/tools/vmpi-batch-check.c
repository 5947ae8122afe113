// SPDX-License-Identifier: GPL-2.0
/*
 * vmpi-batch-check - check batched writes (VMPI_IOC_SET_BATCH with VMPI_BATCH_WRITE) from
 * inside the guest. Every SDU it sends is a test-pattern SDU (docs/DEVICE.md, "Test pattern")
 * on CHANNEL, seq counting from 0, so the host can check each one and the order.
 *
 *   vmpi-batch-check write DEV CHANNEL
 *     On a blocking file: an unknown mode bit is EINVAL; then in batch mode
 *      - one write() of 11 records of 0, 1, 2, 3, 5, 100, 1000, 4000, 4096, max SDU and 7 bytes
 *        (seq 0..10; the last record without its padding) returns the whole buffer;
 *      - 2 records (seq 11, 12), one over max SDU, one more: returns the 2 records' bytes, and
 *        writing from there fails with EMSGSIZE;
 *      - 1 record (seq 13) and a record whose length runs past the end: returns the first
 *        record's bytes, the rest fails with EINVAL;
 *      - 1 record of 8 bytes (seq 14) and 2 stray bytes: returns 12, the 2 bytes fail EINVAL;
 *      - a write of 0 bytes returns 0 and sends nothing;
 *      - back to VMPI_BATCH_READ only, a write of 9 bytes is one SDU again (seq 15).
 *     The host gets exactly seq 0..15, in order.
 *   vmpi-batch-check fill DEV CHANNEL SIZE
 *     For a host that stopped taking tx frames: non-blocking writes of 48 SIZE-byte records each
 *     until EAGAIN; every return must be a whole number of records. Prints
 *     "FILLED sdus=N partial=P" (P: writes that returned a prefix), then switches the file to
 *     blocking and writes 100 more records in one write(), which must wait for the host and
 *     return them all. The host gets exactly seq 0..N+99, in order.
 * Prints a FAIL line per failed check and at the end
 *   RESULT mode=write|fill dev=DEV channel=CH sdus=N bytes=B partial=P failures=F status=ok|verify-failed
 * or ERROR mode=... op=open|bind|... errno=... msg="...". Exit status: 0 ok, 1 error, 3 a check failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmpi_uapi.h"

static const char *mode = "?";
static const char *dev;
static uint32_t channel;
static unsigned int failures;
static uint32_t next_seq;
static uint64_t sent_sdus, sent_bytes;

static void fail(const char *what, long got, long want)
{
	failures++;
	printf("FAIL mode=%s %s: got %ld, want %ld\n", mode, what, got, want);
	fflush(stdout);
}

static int die(const char *op, int err)
{
	printf("ERROR mode=%s dev=%s channel=%" PRIu32 " op=%s errno=%s msg=\"%s\"\n", mode, dev, channel, op,
	       strerrorname_np(err) ? strerrorname_np(err) : "?", strerror(err));
	return 1;
}

/* Append one record of a pattern SDU (seq next_seq) of @size bytes at @off of @b; returns the
 * offset after it, padded to VMPI_BATCH_ALIGN unless @nopad. */
static size_t put_record(uint8_t *b, size_t off, uint32_t size, int nopad)
{
	uint32_t seq = next_seq++, i;
	uint8_t *p = b + off + 4;

	memcpy(b + off, &size, 4);	/* little-endian guest */
	for (i = 0; i < size; i++)
		p[i] = (uint8_t)(i + 7 * seq + 13 * channel);
	if (size >= 8) {
		memcpy(p, &seq, 4);
		memcpy(p + 4, &channel, 4);
	}
	sent_sdus++;
	sent_bytes += size;
	off += 4 + size;
	return nopad ? off : (off + VMPI_BATCH_ALIGN - 1) & ~(size_t)(VMPI_BATCH_ALIGN - 1);
}

static long wr(int fd, const uint8_t *b, size_t n)
{
	ssize_t r = write(fd, b, n);

	return r < 0 ? -errno : r;
}

static int set_batch(int fd, uint32_t m)
{
	return ioctl(fd, VMPI_IOC_SET_BATCH, &m) < 0 ? -errno : 0;
}

static int check_write(int fd, uint32_t max_sdu)
{
	static const uint32_t sizes[] = { 0, 1, 2, 3, 5, 100, 1000, 4000, 4096, 0 /* max */, 7 };
	size_t cap = 16 * (4 + max_sdu + 4), off = 0, first;
	uint8_t *b = calloc(1, cap);
	uint32_t bad, i;
	long r;

	if (!b)
		return die("malloc", ENOMEM);
	r = set_batch(fd, 1u << 7);
	if (r != -EINVAL)
		fail("SET_BATCH with an unknown bit", r, -EINVAL);
	r = set_batch(fd, VMPI_BATCH_READ | VMPI_BATCH_WRITE);
	if (r)
		return die("set_batch", (int)-r);

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		off = put_record(b, off, sizes[i] ? sizes[i] : (i == 9 ? max_sdu : 0), i == 10);
	r = wr(fd, b, off);
	if (r != (long)off)
		fail("11 records in one write", r, off);

	/* Two good records, one over max SDU, one more: a prefix of the two. */
	off = put_record(b, 0, 100, 0);
	off = put_record(b, off, 100, 0);
	first = off;
	bad = max_sdu + 1;
	memcpy(b + off, &bad, 4);
	off += 4 + 8;
	r = wr(fd, b, off + 8);
	if (r != (long)first)
		fail("records before one over max SDU", r, first);
	r = wr(fd, b + first, off + 8 - first);
	if (r != -EMSGSIZE)
		fail("a record over max SDU first", r, -EMSGSIZE);

	/* One good record, one whose length runs past the end. */
	off = put_record(b, 0, 100, 0);
	first = off;
	bad = 200;
	memcpy(b + off, &bad, 4);
	off += 4 + 50;
	r = wr(fd, b, off);
	if (r != (long)first)
		fail("the record before one cut short", r, first);
	r = wr(fd, b + first, off - first);
	if (r != -EINVAL)
		fail("a record cut short first", r, -EINVAL);

	/* One record of 8 bytes and 2 stray bytes. */
	off = put_record(b, 0, 8, 0);
	b[off] = b[off + 1] = 0;
	r = wr(fd, b, off + 2);
	if (r != (long)off)
		fail("a record and 2 stray bytes", r, off);
	r = wr(fd, b + off, 2);
	if (r != -EINVAL)
		fail("2 stray bytes", r, -EINVAL);

	r = wr(fd, b, 0);
	if (r != 0)
		fail("a write of 0 bytes in batch mode", r, 0);

	/* Read batching only: one SDU per write again (9 bytes, seq 15). */
	r = set_batch(fd, VMPI_BATCH_READ);
	if (r)
		return die("set_batch", (int)-r);
	put_record(b, 0, 9, 1);
	r = wr(fd, b + 4, 9);
	if (r != 9)
		fail("one SDU per write without VMPI_BATCH_WRITE", r, 9);
	free(b);
	return 0;
}

static int check_fill(int fd, uint32_t size)
{
	const unsigned int per = 48, more = 100;
	size_t rec = (4 + size + VMPI_BATCH_ALIGN - 1) & ~(size_t)(VMPI_BATCH_ALIGN - 1);
	uint8_t *b = calloc(more, rec);
	unsigned int partial = 0, accepted = 0, i;
	size_t off, len;
	long r;

	if (!b)
		return die("malloc", ENOMEM);
	r = set_batch(fd, VMPI_BATCH_WRITE);
	if (r)
		return die("set_batch", (int)-r);
	for (;;) {
		next_seq = accepted;
		for (off = 0, i = 0; i < per; i++)
			off = put_record(b, off, size, 0);
		r = wr(fd, b, off);
		if (r == -EAGAIN)
			break;
		if (r < 0)
			return die("write", (int)-r);
		if (r % rec)
			fail("a non-blocking write returned part of a record", r, (r / rec) * rec);
		if ((size_t)r < off)
			partial++;
		accepted += r / rec;
		if (accepted > 100000)
			return die("fill (the host never stopped taking frames)", EOVERFLOW);
	}
	printf("FILLED sdus=%u partial=%u\n", accepted, partial);
	fflush(stdout);
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
		return die("fcntl", errno);
	next_seq = accepted;
	for (off = 0, i = 0; i < more; i++)
		off = put_record(b, off, size, 0);
	len = off;
	r = wr(fd, b, len);
	if (r != (long)len)
		fail("a blocking write of 100 records on a full ring", r, len);
	sent_sdus = accepted + more;
	sent_bytes = sent_sdus * size;
	printf("RESULT mode=%s dev=%s channel=%" PRIu32 " sdus=%" PRIu64 " bytes=%" PRIu64 " partial=%u failures=%u status=%s\n",
	       mode, dev, channel, sent_sdus, sent_bytes, partial, failures, failures ? "verify-failed" : "ok");
	free(b);
	return failures ? 3 : 0;
}

int main(int argc, char **argv)
{
	struct vmpi_info info;
	int fd, rc;

	if (argc < 4 || (strcmp(argv[1], "write") && strcmp(argv[1], "fill")) ||
	    (!strcmp(argv[1], "fill") && argc != 5)) {
		fprintf(stderr, "usage: vmpi-batch-check write DEV CHANNEL | fill DEV CHANNEL SIZE\n");
		return 1;
	}
	mode = argv[1];
	dev = argv[2];
	channel = (uint32_t)strtoul(argv[3], NULL, 0);
	fd = open(dev, O_RDWR | (strcmp(mode, "fill") ? 0 : O_NONBLOCK));
	if (fd < 0)
		return die("open", errno);
	if (ioctl(fd, VMPI_IOC_BIND, &channel) < 0)
		return die("bind", errno);
	if (ioctl(fd, VMPI_IOC_GET_INFO, &info) < 0)
		return die("info", errno);
	if (!strcmp(mode, "fill"))
		return check_fill(fd, (uint32_t)strtoul(argv[4], NULL, 0));
	rc = check_write(fd, info.max_sdu);
	if (rc)
		return rc;
	printf("RESULT mode=%s dev=%s channel=%" PRIu32 " sdus=%" PRIu64 " bytes=%" PRIu64 " partial=0 failures=%u status=%s\n",
	       mode, dev, channel, sent_sdus, sent_bytes, failures, failures ? "verify-failed" : "ok");
	return failures ? 3 : 0;
}
