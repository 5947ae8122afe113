/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * vmpi_uapi.h - user-space interface of the VMPI guest driver (/dev/vmpiN).
 *
 * Shared by guest-driver/vmpi.c and guest-driver/tools/vmpi-perf.c; see docs/DEVICE.md
 * ("Guest character device") for the semantics of read/write/poll on a bound file.
 */
#ifndef _UAPI_VMPI_H
#define _UAPI_VMPI_H

#include <linux/types.h>
#include <linux/ioctl.h>

/* Device config (8 bytes, little-endian), as read from virtio config space. */
#define VMPI_MAGIC		0x49504d56	/* "VMPI" */
#define VMPI_VERSION		1
#define VMPI_HDR_LEN		4		/* le32 channel in front of every SDU */
#define VMPI_CTRL_CHANNEL	0

struct vmpi_config {
	__le32 magic;
	__u8 version;
	__u8 max_sdu_log2;
	__le16 vmpi_id;
};

/* Counters, as in sysfs (per device, since it was probed). */
struct vmpi_stats {
	__u64 rx_frames;	/* frames delivered to a bound file's queue */
	__u64 rx_bytes;		/* SDU bytes delivered */
	__u64 tx_frames;	/* frames posted on the tx queue */
	__u64 tx_bytes;		/* SDU bytes posted */
	__u64 rx_drops_unbound;	/* frames for a channel no file is bound to */
	__u64 rx_drops_full;	/* frames dropped because the channel queue was full (only
				 * with rx_stall_ms=0; otherwise the host is held back) */
	__u64 rx_malformed;	/* frames shorter than the header or longer than 4 + max SDU
				 * (packed rx: buffers with a bad record) */
	__u64 rx_drops_nomem;	/* frames dropped for lack of memory */
	__u64 rx_drops_stalled;	/* frames for a channel whose reader stalled (full for
				 * rx_stall_ms), dropped until it drained to half */
};

#define VMPI_INFO_F_BOUND	(1u << 0)	/* this file is bound; channel is valid */
#define VMPI_INFO_F_REMOVED	(1u << 1)	/* the device is gone */
#define VMPI_INFO_F_SHUTDOWN	(1u << 2)	/* VMPI_IOC_SHUTDOWN was called on this file */

struct vmpi_info {
	__u32 vmpi_id;		/* the device's VMPI-id (config space, 0 = unassigned) */
	__u32 max_sdu;		/* largest SDU in bytes (1 << max_sdu_log2) */
	__u32 index;		/* N in /dev/vmpiN */
	__u32 flags;		/* VMPI_INFO_F_* */
	__u32 channel;		/* channel this file is bound to */
	__u32 rx_queued;	/* SDUs waiting in this file's queue (also after shutdown) */
	__u32 rx_queue_len;	/* per-channel queue bound in SDUs */
	__u32 reserved;
	struct vmpi_stats stats;
};

#define VMPI_IOC_MAGIC		0xB7
/* Bind this open file to a channel (u32). -EBUSY if another file holds it, -EINVAL if this
 * file is already bound, -ESHUTDOWN after VMPI_IOC_SHUTDOWN. A binding lasts until the file
 * is closed or shut down. */
#define VMPI_IOC_BIND		_IOW(VMPI_IOC_MAGIC, 1, __u32)
#define VMPI_IOC_GET_INFO	_IOR(VMPI_IOC_MAGIC, 2, struct vmpi_info)
/* Length of the next queued SDU (u32); -EAGAIN if the queue is empty (-ESHUTDOWN after
 * VMPI_IOC_SHUTDOWN). Does not consume. */
#define VMPI_IOC_NEXT_LEN	_IOR(VMPI_IOC_MAGIC, 3, __u32)
/* End this open file description's binding for good; every fd sharing it sees it (dup,
 * SCM_RIGHTS). The channel is free at once; queued SDUs stay readable, then read() fails with
 * -ESHUTDOWN; write() and BIND fail with -ESHUTDOWN; poll reports EPOLLIN|EPOLLHUP|EPOLLOUT.
 * Idempotent, also on a file never bound. */
#define VMPI_IOC_SHUTDOWN	_IO(VMPI_IOC_MAGIC, 4)
/* Batch modes of this open file description (u32, a mask of VMPI_BATCH_*; 0, the default: one
 * SDU per read() and per write()). VMPI_BATCH_READ: read() returns as many whole queued SDUs as
 * fit in the buffer, each as a record: le32 length followed by the SDU, the next record starting
 * at the following multiple of VMPI_BATCH_ALIGN (padding bytes are left as they were); -EMSGSIZE
 * if the first SDU does not fit. VMPI_BATCH_WRITE: write() takes records in the same format, each
 * sent as one frame, in order; it returns the bytes of the whole records it sent (a prefix of
 * the buffer, its last record's padding included), never part of one: with O_NONBLOCK it stops
 * where the tx ring fills (-EAGAIN if no record fit), and it stops before a record whose length
 * is over max SDU (-EMSGSIZE) or runs past the end of the buffer (-EINVAL), those errors
 * returned only when that record is the first. Other bits: -EINVAL (a driver that predates
 * VMPI_BATCH_WRITE refuses it that way). See docs/DEVICE.md. */
#define VMPI_IOC_SET_BATCH	_IOW(VMPI_IOC_MAGIC, 5, __u32)
#define VMPI_BATCH_READ		(1u << 0)
#define VMPI_BATCH_WRITE	(1u << 1)
#define VMPI_BATCH_ALIGN	4

#endif /* _UAPI_VMPI_H */
