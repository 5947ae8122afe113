// SPDX-License-Identifier: GPL-2.0
/*
 * vmpi.c - guest driver for the VMPI device (RINA "shim DIF for hypervisors").
 *
 * A VMPI device is a pair of virtqueues between a VM and its host: every message is one frame,
 * "le32 channel | SDU", in one descriptor chain (docs/DEVICE.md is the wire contract). On stock
 * QEMU the device rides on vhost-user-gpio-pci, so this driver binds virtio device id 41 and
 * claims only devices whose config space carries the VMPI magic and version 1.
 *
 * Each device gets a character device /dev/vmpiN. An open file is bound to one channel with
 * VMPI_IOC_BIND (a channel is held by at most one file at a time); then every write() sends one
 * SDU on that channel and every read() returns one SDU received on it. VMPI_IOC_SHUTDOWN frees
 * the channel while the file stays open (its queued SDUs stay readable). See vmpi_uapi.h.
 *
 * Data path:
 *  - rx (vq 0): the ring is kept full of page-based buffers of 4 + max SDU bytes. The virtqueue
 *    callback only schedules rx_work, which takes used buffers, queues each SDU on the bound
 *    file's channel and refills the ring. A channel's queue is a ring of entries (buffer,
 *    offset, length) allocated at open, bounded by rx_queue_len SDUs and rx_queue_bytes of
 *    buffer memory; an entry holds a reference on the rx buffer the SDU arrived in, and read()
 *    copies the SDU straight out of it. A buffer is zeroed where the host wrote and goes back to
 *    the ring (through a small pool of spare buffers) once its last SDU is read; the ring
 *    allocates a new one only when the pool is empty. Without packing, small SDUs
 *    (<= copybreak) are copied out instead and their buffer reposted at once.
 *  - Packed rx (feature VMPI_F_RX_PACKED, taken unless rx_packed=0): one used rx buffer holds a
 *    sequence of records "le32 channel | le32 length | SDU", each at a multiple of 8, up to
 *    used.len. rx_work unpacks it record by record into the channel queues (vd->unpack keeps
 *    the buffer and the next record's offset while a record is parked), each record validated
 *    and queued in place: no allocation and no copy per SDU. A record that does not fit in
 *    used.len or exceeds max SDU ends the buffer (rx_malformed); the records before it are
 *    delivered. A queue is charged a whole buffer once per run of its records in it, so a
 *    channel holds at most rx_queue_bytes of buffers however its records are spread.
 *  - rx is lossless: a record whose channel queue is full is parked (vd->park) and rx_work
 *    stops taking used buffers, so the ring runs dry and the host holds back (its backlog, then
 *    SendResult.Full). A read() that drains the queue to half its bounds, a close or shutdown
 *    of the file and removal re-run rx_work, which delivers the parked frame and goes on in
 *    order. To bound head-of-line blocking, a full channel whose reader makes no progress for
 *    rx_stall_ms is declared stalled: the clock starts when it fills and starts again each time
 *    the reader has taken an eighth of the queue's bounds (vmpi_rx_progress), so a reader that
 *    is slow for a while (a busy or descheduled guest) stays lossless and one that trickles
 *    stalls. A stalled channel's parked frame and every later frame for it are dropped
 *    (rx_drops_stalled) until its reader drains it to half, then it is lossless again.
 *    rx_stall_ms = 0 restores drop-when-full (rx_drops_full).
 *  - tx (vq 1): write() copies the SDU into a linear (small) or page-based buffer and adds it
 *    under tx_lock; in batch-write mode (VMPI_BATCH_WRITE) one write() carries many SDUs as
 *    records, copied into frames a few at a time and added under one lock and one kick. Used
 *    buffers are reclaimed by later writes and polls. Packed tx (feature VMPI_F_TX_PACKED, taken
 *    unless tx_packed=0): every tx buffer holds records "le32 channel | le32 length | SDU" like
 *    packed rx, ending at the buffer's length; a batch write packs as many of its records as fit
 *    in 8 + max SDU bytes into each buffer (vmpi_tx_pack), a single write sends one record. The tx callback is
 *    only enabled while the ring is full; it wakes blocked writers and pollers.
 *
 * The host is not trusted (docs/DEVICE.md, "A host that misbehaves"): a used rx length shorter
 * than the header or longer than the buffer is dropped and counted; rx buffers are posted zeroed
 * and the bytes a delivered frame exposed are zeroed again before the buffer is reposted, so a
 * host that claims more bytes than it wrote hands a reader zeros, never stale guest memory or
 * another frame's bytes; a used id that is out of range or not outstanding makes the virtio core
 * mark the queue broken, and the driver then resets the device and sets it up again (reset_work,
 * through the freeze/restore callbacks that also serve suspend); a config that changes at run
 * time may only change the VMPI-id. Each is counted in sysfs with a rate-limited warning.
 *
 * Locking: vd->lock (process context only) protects the channel table, the per-file queues and
 * stall state, vd->park, the rx buffers' reference counts, the rx buffer pool and vd->removed (files re-queue rx_work under it,
 * so no kick follows remove's cancel). vd->tx_lock (taken with interrupts disabled, because
 * the tx callback runs in hard-irq context) protects the tx virtqueue; vd->removed and
 * f->shutdown are also written under it, so no write posts a frame after them. The rx
 * virtqueue is touched only by rx_work (which never runs concurrently with itself), by probe
 * before the device is live and by remove after rx_work is cancelled. vd->resetting (a reset in
 * progress, or one that failed) is written under both locks; while it is set nothing but
 * reset_work touches either virtqueue (rx_work, kicks and writers check it). Open files hold a
 * reference on struct vmpi_dev, so a file outlives the device: after removal every call on it
 * fails with -ENODEV.
 */
#include <linux/module.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/hashtable.h>
#include <linux/idr.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/uaccess.h>
#include <linux/sched/signal.h>
#include <asm/unaligned.h>

#include "vmpi_uapi.h"

#define VIRTIO_ID_VMPI_CARRIER	41	/* VIRTIO_ID_GPIO: the vhost-user-gpio-pci carrier */
#define VMPI_MAX_SDU_LOG2	20	/* refuse devices asking for more than 1 MiB SDUs */
#define VMPI_RX_BUDGET		64	/* frames per rx_work run before yielding */
#define VMPI_RX_POOL_MAX	32	/* spare rx page buffers kept for reuse */
#define VMPI_RX_REC_BUDGET	1024	/* packed records per rx_work run before yielding */

/* Device feature bit 0: rx buffers carry many records (docs/DEVICE.md, "Packed rx"). */
#define VMPI_F_RX_PACKED	0
#define VMPI_REC_HDR_LEN	8	/* le32 channel | le32 SDU length */
#define VMPI_REC_ALIGN		8	/* records start at multiples of this */
/* Device feature bit 1: tx buffers carry many records (docs/DEVICE.md, "Packed tx"). */
#define VMPI_F_TX_PACKED	1

static unsigned int rx_queue_len = 256;
module_param(rx_queue_len, uint, 0444);
MODULE_PARM_DESC(rx_queue_len, "Max SDUs queued per bound channel (default 256)");

static unsigned int rx_queue_bytes = 8 << 20;
module_param(rx_queue_bytes, uint, 0444);
MODULE_PARM_DESC(rx_queue_bytes, "Max buffer memory queued per bound channel (default 8 MiB)");

/*
 * 5 s, not 1 s: a reader taking nothing for a second is no sign of a stuck one in a VM. The
 * guest daemon's event loop was measured pausing 1.7-2.2 s (TCG on a loaded 2-core host), and a
 * false stall costs data while a late one only holds the other channels back longer.
 */
static unsigned int rx_stall_ms = 5000;
module_param(rx_stall_ms, uint, 0644);
MODULE_PARM_DESC(rx_stall_ms, "A full channel whose reader takes no eighth of its queue this long "
		 "stops blocking rx: its frames are dropped until its reader catches up "
		 "(0: drop whenever full; default 5000)");

static bool rx_packed = true;
module_param(rx_packed, bool, 0444);
MODULE_PARM_DESC(rx_packed, "Take VMPI_F_RX_PACKED when the host offers it (default 1; 0: one frame per rx buffer)");

static bool tx_packed = true;
module_param(tx_packed, bool, 0444);
MODULE_PARM_DESC(tx_packed, "Take VMPI_F_TX_PACKED when the host offers it (default 1; 0: one frame per tx buffer)");

static unsigned int copybreak = 1024;
module_param(copybreak, uint, 0444);
MODULE_PARM_DESC(copybreak, "Received SDUs up to this size are copied out of the ring buffer");

static DEFINE_IDA(vmpi_ida);

/*
 * A frame buffer: either linear (npages == 0, bytes in lin[]) or a list of pages (the layout
 * is contiguous across pages: header at offset 0 of page 0, SDU from offset 4).
 */
struct vmpi_buf {
	struct list_head node;		/* in the rx pool or a list of buffers to release */
	unsigned int len;		/* frame bytes: header + SDU */
	unsigned int cap;		/* capacity in bytes */
	unsigned int npages;
	unsigned int charge;		/* bytes accounted against rx_queue_bytes */
	unsigned int data;		/* offset of the SDU (the channel is at 0): 4 */
	unsigned int refs;		/* rx: queued records (and unpack/park) using it; vd->lock */
	unsigned int exposed;		/* rx page buffer: bytes to zero before it is reposted */
	struct page **pages;
	struct scatterlist *sg;
	u8 lin[];
};

/*
 * One queued SDU: @len bytes at offset @off of @buf, which it holds a reference on (an rx page
 * buffer, zero-copy, or for an unpacked small frame a linear copy). A channel's queue is a ring
 * of these, allocated when the file is opened: queueing a record allocates nothing.
 */
struct vmpi_rxent {
	struct vmpi_buf *buf;
	u32 off;
	u32 len;
};

struct vmpi_dev {
	struct virtio_device *vdev;
	struct virtqueue *rxvq;
	struct virtqueue *txvq;
	struct kref kref;
	struct miscdevice misc;
	char name[16];
	int index;

	u32 vmpi_id;
	u32 max_sdu;
	u8 sdu_log2;			/* max_sdu_log2 at probe: the config may not change it */
	unsigned int frame_pages;	/* pages per rx buffer: DIV_ROUND_UP(rx_cap) */
	unsigned int rx_cap;		/* bytes per rx buffer: 4 + max_sdu, packed 8 + max_sdu */
	bool packed;			/* VMPI_F_RX_PACKED negotiated */
	unsigned int tx_slots;		/* ring slots the largest tx frame needs */
	bool tx_packed;			/* VMPI_F_TX_PACKED negotiated */

	spinlock_t lock;		/* channels, file queues, rx_pool, removed */
	DECLARE_HASHTABLE(chans, 6);	/* bound files by channel */
	struct list_head rx_pool;
	unsigned int rx_pool_len;
	bool removed;
	bool resetting;			/* reset_work owns the virtqueues (or the reset failed) */
	bool dead;			/* the reset failed: no virtqueues any more */
	bool wake_pending;		/* some bound file has f->wake set */
	struct vmpi_rxent park;		/* record waiting for room in its channel (.buf set) */
	struct vmpi_buf *unpack;	/* packed rx buffer being unpacked (rx_work only) */
	unsigned int unpack_len;	/* its used.len */
	unsigned int unpack_off;	/* offset of its next record */
	u32 parked_ch;
	unsigned long park_deadline;	/* jiffies: parked_ch's stall deadline */

	struct delayed_work rx_work;
	struct work_struct config_work;
	struct delayed_work reset_work;	/* the host broke a virtqueue: reset and set up again */
	unsigned long last_reset;	/* jiffies of the last reset (at most one per second) */

	spinlock_t tx_lock;		/* txvq, tx_seq */
	unsigned long tx_seq;		/* bumped by every tx interrupt */
	wait_queue_head_t tx_wait;

	struct {
		atomic64_t rx_frames, rx_bytes, tx_frames, tx_bytes;
		atomic64_t rx_drops_unbound, rx_drops_full, rx_malformed, rx_drops_nomem;
		atomic64_t rx_drops_stalled;
		/* A host that misbehaves (sysfs only: struct vmpi_stats keeps its layout). */
		atomic64_t rx_short, rx_oversize, ring_resets, config_rejected;
		atomic64_t rx_buffers;	/* rx page buffers allocated now (ring, pool, queues) */
		atomic64_t rx_copied;	/* unpacked small frames copied out (rx_packed=0 only) */
	} st;
};

struct vmpi_file {
	struct vmpi_dev *vd;
	struct hlist_node hnode;	/* in vd->chans while bound */
	u32 channel;
	bool bound;			/* in vd->chans; written under vd->lock */
	bool shutdown;			/* VMPI_IOC_SHUTDOWN: unbound for good */
	bool wake;			/* got frames in this rx_work batch: wake its reader */
	bool batch;			/* VMPI_BATCH_READ: read() returns many SDUs */
	bool batch_write;		/* VMPI_BATCH_WRITE: write() takes many SDUs */
	struct vmpi_rxent *rxq;		/* ring of rx_queue_len queued SDUs, oldest at rx_head */
	unsigned int rx_head;
	unsigned int rx_count;
	unsigned int rx_bytes;		/* buffer memory held: each buffer once (see vmpi_rx_charge) */
	struct mutex read_mutex;	/* one read() at a time takes and copies records */
	bool full;			/* filled up (a frame parked) and not yet drained to half */
	bool stalled;			/* no progress for rx_stall_ms: its frames are dropped */
	unsigned long full_since;	/* jiffies: the stall clock's start (the fill, or the last progress) */
	unsigned int full_count, full_bytes;	/* rx_count, rx_bytes then */
	wait_queue_head_t rq;
	/*
	 * Per-channel counters (sysfs channel_stats), for the life of the binding. Plain u64s,
	 * each written only under a lock its path already holds (rx and drops: vd->lock in
	 * rx_work; tx: vd->tx_lock in vmpi_tx_post), read without it: no atomics, no new locks on
	 * the per-SDU path. On 32-bit a read may see a torn value; 64-bit reads are whole.
	 */
	struct {
		u64 rx_sdus, rx_bytes;		/* vd->lock */
		u64 rx_drops_full, rx_drops_stalled;	/* vd->lock */
		u64 rx_full;			/* vd->lock: times the queue filled (a frame parked) */
		u64 tx_sdus, tx_bytes;		/* vd->tx_lock */
		u64 tx_full;			/* vd->tx_lock: writes that found the tx ring full */
	} cst;
};

/* ---- buffers ---- */

static void vmpi_buf_free(struct vmpi_buf *buf)
{
	unsigned int i;

	for (i = 0; i < buf->npages; i++)
		if (buf->pages[i])
			__free_page(buf->pages[i]);
	kfree(buf);
}

static void vmpi_buf_free_list(struct list_head *list)
{
	struct vmpi_buf *buf, *tmp;

	list_for_each_entry_safe(buf, tmp, list, node)
		vmpi_buf_free(buf);
	INIT_LIST_HEAD(list);
}

static struct vmpi_buf *vmpi_buf_alloc_linear(unsigned int cap, gfp_t gfp)
{
	struct vmpi_buf *buf = kmalloc(sizeof(*buf) + cap, gfp);

	if (!buf)
		return NULL;
	INIT_LIST_HEAD(&buf->node);
	buf->len = 0;
	buf->cap = cap;
	buf->npages = 0;
	buf->charge = cap;
	buf->data = VMPI_HDR_LEN;
	buf->pages = NULL;
	buf->sg = NULL;
	return buf;
}

/* A page-based buffer of @cap bytes; its scatterlist covers exactly @cap bytes. */
static struct vmpi_buf *vmpi_buf_alloc_pages(unsigned int cap, gfp_t gfp)
{
	unsigned int n = DIV_ROUND_UP(cap, PAGE_SIZE), i, left = cap;
	struct vmpi_buf *buf;

	buf = kzalloc(sizeof(*buf) + n * (sizeof(struct page *) + sizeof(struct scatterlist)), gfp);
	if (!buf)
		return NULL;
	INIT_LIST_HEAD(&buf->node);
	buf->cap = cap;
	buf->data = VMPI_HDR_LEN;
	buf->npages = n;
	buf->charge = n * PAGE_SIZE;
	buf->pages = (struct page **)buf->lin;
	buf->sg = (struct scatterlist *)(buf->pages + n);
	sg_init_table(buf->sg, n);
	for (i = 0; i < n; i++) {
		buf->pages[i] = alloc_page(gfp);
		if (!buf->pages[i]) {
			vmpi_buf_free(buf);
			return NULL;
		}
		sg_set_page(&buf->sg[i], buf->pages[i], min_t(unsigned int, left, PAGE_SIZE), 0);
		left -= min_t(unsigned int, left, PAGE_SIZE);
	}
	return buf;
}

static void *vmpi_buf_head(struct vmpi_buf *buf)
{
	return buf->npages ? page_address(buf->pages[0]) : buf->lin;
}

/* Byte @off of @buf (@off < cap) and how many bytes from there are contiguous (in @room). */
static void *vmpi_buf_at(struct vmpi_buf *buf, unsigned int off, unsigned int *room)
{
	if (!buf->npages) {
		*room = buf->cap - off;
		return buf->lin + off;
	}
	*room = min_t(unsigned int, PAGE_SIZE - offset_in_page(off), buf->cap - off);
	return page_address(buf->pages[off >> PAGE_SHIFT]) + offset_in_page(off);
}

/* Zero the first @len bytes of page buffer @buf (what a frame exposed), before it is reposted. */
static void vmpi_buf_zero(struct vmpi_buf *buf, unsigned int len)
{
	unsigned int i;

	for (i = 0; i < buf->npages && len; i++) {
		unsigned int n = min_t(unsigned int, len, PAGE_SIZE);

		memset(page_address(buf->pages[i]), 0, n);
		len -= n;
	}
}

static int vmpi_buf_to_user(struct vmpi_buf *buf, unsigned int off, char __user *dst, size_t n)
{
	if (!buf->npages)
		return copy_to_user(dst, buf->lin + off, n) ? -EFAULT : 0;
	while (n) {
		unsigned int po = offset_in_page(off);
		size_t chunk = min_t(size_t, n, PAGE_SIZE - po);

		if (copy_to_user(dst, page_address(buf->pages[off >> PAGE_SHIFT]) + po, chunk))
			return -EFAULT;
		dst += chunk;
		off += chunk;
		n -= chunk;
	}
	return 0;
}

static int vmpi_buf_from_user(struct vmpi_buf *buf, unsigned int off, const char __user *src,
			      size_t n)
{
	if (!buf->npages)
		return copy_from_user(buf->lin + off, src, n) ? -EFAULT : 0;
	while (n) {
		unsigned int po = offset_in_page(off);
		size_t chunk = min_t(size_t, n, PAGE_SIZE - po);

		if (copy_from_user(page_address(buf->pages[off >> PAGE_SHIFT]) + po, src, chunk))
			return -EFAULT;
		src += chunk;
		off += chunk;
		n -= chunk;
	}
	return 0;
}

/*
 * Give a buffer that has left the rx path back (zeroed, if it is an rx buffer): rx-sized page
 * buffers go to the pool, or are freed (and uncounted in rx_buffers) when it is full.
 */
static void vmpi_buf_recycle(struct vmpi_dev *vd, struct vmpi_buf *buf)
{
	if (buf->npages == vd->frame_pages && buf->cap == vd->rx_cap) {
		spin_lock(&vd->lock);
		if (!vd->removed && vd->rx_pool_len < VMPI_RX_POOL_MAX) {
			list_add(&buf->node, &vd->rx_pool);
			vd->rx_pool_len++;
			buf = NULL;
		}
		spin_unlock(&vd->lock);
		if (buf)
			atomic64_dec(&vd->st.rx_buffers);
	}
	if (buf)
		vmpi_buf_free(buf);
}

static void vmpi_dev_release(struct kref *kref)
{
	struct vmpi_dev *vd = container_of(kref, struct vmpi_dev, kref);

	kfree(vd);
}

static void vmpi_dev_put(struct vmpi_dev *vd)
{
	kref_put(&vd->kref, vmpi_dev_release);
}

/* ---- receive ---- */

static struct vmpi_file *vmpi_find_locked(struct vmpi_dev *vd, u32 channel)
{
	struct vmpi_file *f;

	hash_for_each_possible(vd->chans, f, hnode, channel)
		if (f->channel == channel)
			return f;
	return NULL;
}

/* Slot @i places after the oldest queued record of @f. */
static unsigned int vmpi_rx_slot(struct vmpi_file *f, unsigned int i)
{
	unsigned int slot = f->rx_head + i;

	return slot >= rx_queue_len ? slot - rx_queue_len : slot;
}

/*
 * What queueing a record of @buf on @f adds to f->rx_bytes: the whole buffer, once per run of
 * the channel's records in it. Buffers are unpacked in order, so a channel's records from one
 * buffer are consecutive in its queue; vmpi_rx_pop_locked takes the charge back when a run's
 * last record leaves. So rx_bytes is the buffer memory the queue keeps from being reused.
 */
static unsigned int vmpi_rx_charge(struct vmpi_file *f, struct vmpi_buf *buf)
{
	if (f->rx_count && f->rxq[vmpi_rx_slot(f, f->rx_count - 1)].buf == buf)
		return 0;
	return buf->charge;
}

static bool vmpi_rx_fits(struct vmpi_file *f, unsigned int charge)
{
	return f->rx_count < rx_queue_len && (!f->rx_count || f->rx_bytes + charge <= rx_queue_bytes);
}

/* Drained to half the bounds: a full channel is resumed, a stalled one is lossless again. */
static bool vmpi_rx_low(struct vmpi_file *f)
{
	return f->rx_count <= rx_queue_len / 2 && f->rx_bytes <= rx_queue_bytes / 2;
}

/*
 * A full @f's reader has taken an eighth of the queue's bounds (SDUs or buffer memory) since the
 * stall clock last started: it is keeping up, if slowly. full_count/full_bytes grow with every
 * record queued while full, so each difference is exactly what was read. Under vd->lock.
 */
static bool vmpi_rx_progress(struct vmpi_file *f)
{
	return f->full_count - f->rx_count >= max(rx_queue_len / 8, 1U) ||
	       f->full_bytes - f->rx_bytes >= rx_queue_bytes / 8;
}

/* Start @f's stall clock (it filled, or its reader made progress). Under vd->lock. */
static void vmpi_rx_clock_locked(struct vmpi_file *f)
{
	f->full_since = jiffies;
	f->full_count = f->rx_count;
	f->full_bytes = f->rx_bytes;
}

/* Take the oldest queued record of @f (rx_count > 0) into @e. Under vd->lock. */
static void vmpi_rx_pop_locked(struct vmpi_file *f, struct vmpi_rxent *e)
{
	*e = f->rxq[f->rx_head];
	f->rx_head = vmpi_rx_slot(f, 1);
	f->rx_count--;
	if (!f->rx_count || f->rxq[f->rx_head].buf != e->buf)
		f->rx_bytes -= e->buf->charge;
}

/* Drop a reference on @buf; the last one puts it on @done (for vmpi_rx_release). vd->lock. */
static void vmpi_rx_put_locked(struct vmpi_buf *buf, struct list_head *done)
{
	if (!--buf->refs)
		list_add_tail(&buf->node, done);
}

/*
 * Buffers no record uses any more (without vd->lock): an rx page buffer gets the bytes the host
 * exposed zeroed (a later buffer whose used length overstates what the host wrote cannot show
 * these to another reader) and goes back to the pool to be reposted; a copy is freed.
 */
static void vmpi_rx_release(struct vmpi_dev *vd, struct list_head *done)
{
	struct vmpi_buf *buf, *tmp;

	list_for_each_entry_safe(buf, tmp, done, node) {
		list_del_init(&buf->node);
		if (buf->npages && buf->exposed)
			vmpi_buf_zero(buf, buf->exposed);
		buf->exposed = 0;
		vmpi_buf_recycle(vd, buf);
	}
}

/* SDUs and bytes delivered by one rx_work step, added to the device counters at its end. */
struct vmpi_rx_tally {
	u64 sdus, bytes;
};

static void vmpi_rx_account(struct vmpi_dev *vd, struct vmpi_rx_tally *t)
{
	if (!t->sdus)
		return;
	atomic64_add(t->sdus, &vd->st.rx_frames);
	atomic64_add(t->bytes, &vd->st.rx_bytes);
	t->sdus = t->bytes = 0;
}

enum { VMPI_RX_QUEUED, VMPI_RX_DROPPED, VMPI_RX_PARKED };

/*
 * Queue record @e (which holds a reference on its buffer) on @channel, bound to @f (or NULL):
 * VMPI_RX_QUEUED (the queue has the reference now), VMPI_RX_DROPPED (counted; the caller drops
 * the reference), or VMPI_RX_PARKED (in vd->park, with the reference) when the channel is full
 * but not yet stalled: then rx_work must stop taking records. Allocates nothing. vd->lock,
 * rx_work only.
 */
static int vmpi_rx_queue_locked(struct vmpi_dev *vd, struct vmpi_file *f, u32 channel,
				const struct vmpi_rxent *e, struct vmpi_rx_tally *t)
{
	unsigned long stall;
	unsigned int charge;

	if (!f) {
		atomic64_inc(&vd->st.rx_drops_unbound);
		return VMPI_RX_DROPPED;
	}
	if (f->stalled) {
		atomic64_inc(&vd->st.rx_drops_stalled);
		WRITE_ONCE(f->cst.rx_drops_stalled, f->cst.rx_drops_stalled + 1);
		return VMPI_RX_DROPPED;
	}
	charge = vmpi_rx_charge(f, e->buf);
	if (vmpi_rx_fits(f, charge)) {
		f->rxq[vmpi_rx_slot(f, f->rx_count)] = *e;
		f->rx_count++;
		f->rx_bytes += charge;
		if (f->full) {
			/*
			 * The stall clock's baseline moves with what is queued, so that baseline less
			 * the queue is what the reader took since the clock started, never a wrapped
			 * difference (vmpi_rx_progress).
			 */
			f->full_count++;
			f->full_bytes += charge;
		}
		t->sdus++;
		t->bytes += e->len;
		WRITE_ONCE(f->cst.rx_sdus, f->cst.rx_sdus + 1);
		WRITE_ONCE(f->cst.rx_bytes, f->cst.rx_bytes + e->len);
		/* Woken once per batch (vmpi_rx_wake): one switch to the reader, not one per SDU. */
		f->wake = true;
		vd->wake_pending = true;
		return VMPI_RX_QUEUED;
	}
	stall = msecs_to_jiffies(READ_ONCE(rx_stall_ms));
	if (!stall) {
		atomic64_inc(&vd->st.rx_drops_full);
		WRITE_ONCE(f->cst.rx_drops_full, f->cst.rx_drops_full + 1);
		return VMPI_RX_DROPPED;
	}
	if (!f->full) {
		f->full = true;
		vmpi_rx_clock_locked(f);
		WRITE_ONCE(f->cst.rx_full, f->cst.rx_full + 1);
	}
	if (time_before(jiffies, f->full_since + stall)) {
		vd->park = *e;
		vd->parked_ch = channel;
		vd->park_deadline = f->full_since + stall;
		return VMPI_RX_PARKED;
	}
	f->stalled = true;
	atomic64_inc(&vd->st.rx_drops_stalled);
	WRITE_ONCE(f->cst.rx_drops_stalled, f->cst.rx_drops_stalled + 1);
	dev_info_ratelimited(&vd->vdev->dev,
			     "%s: channel %u stalled, dropping its frames until it drains\n",
			     vd->name, channel);
	return VMPI_RX_DROPPED;
}

static int vmpi_rx_deliver_locked(struct vmpi_dev *vd, u32 channel, const struct vmpi_rxent *e,
				  struct vmpi_rx_tally *t)
{
	return vmpi_rx_queue_locked(vd, vmpi_find_locked(vd, channel), channel, e, t);
}

/*
 * Wake the readers of the files that got frames since the last call. Under the lock: a file
 * cannot be released while we hold it (release unhashes it under the same lock). rx_work only.
 */
static void vmpi_rx_wake(struct vmpi_dev *vd)
{
	struct vmpi_file *f;
	int bkt;

	if (!vd->wake_pending)
		return;
	spin_lock(&vd->lock);
	vd->wake_pending = false;
	hash_for_each(vd->chans, bkt, f, hnode) {
		if (f->wake) {
			f->wake = false;
			wake_up_interruptible_poll(&f->rq, EPOLLIN | EPOLLRDNORM);
		}
	}
	spin_unlock(&vd->lock);
}

/* Take the frame out of used rx buffer @buf (one frame per buffer: rx_packed=0) and deliver it. */
static void vmpi_rx_frame(struct vmpi_dev *vd, struct vmpi_buf *buf, unsigned int len)
{
	struct vmpi_rx_tally t = {};
	struct vmpi_rxent e;
	struct vmpi_buf *q;
	LIST_HEAD(done);
	u32 channel;

	/*
	 * The used length is the host's word: nothing beyond the buffer is read, and (the buffer
	 * having been posted zeroed) bytes it claims but did not write read as zeros.
	 */
	if (len < VMPI_HDR_LEN || len > buf->cap) {
		atomic64_inc(&vd->st.rx_malformed);
		atomic64_inc(len < VMPI_HDR_LEN ? &vd->st.rx_short : &vd->st.rx_oversize);
		dev_warn_ratelimited(&vd->vdev->dev,
				     "%s: host used an rx buffer with length %u (frames are %u..%u bytes): dropped\n",
				     vd->name, len, VMPI_HDR_LEN, buf->cap);
		vmpi_buf_zero(buf, buf->cap);	/* whatever the host wrote goes with it */
		vmpi_buf_recycle(vd, buf);
		return;
	}
	/*
	 * Small SDUs are copied out and the buffer reposted at once (a whole rx buffer per small
	 * frame would be held otherwise); larger ones are queued in the buffer itself.
	 */
	if (len - VMPI_HDR_LEN <= copybreak && len <= PAGE_SIZE) {
		q = vmpi_buf_alloc_linear(len, GFP_KERNEL | __GFP_NOWARN);
		if (q)
			memcpy(q->lin, vmpi_buf_head(buf), len);
		memset(vmpi_buf_head(buf), 0, len);
		vmpi_buf_recycle(vd, buf);	/* back to the pool, to be reposted */
		if (!q) {
			atomic64_inc(&vd->st.rx_drops_nomem);
			return;
		}
		atomic64_inc(&vd->st.rx_copied);
		buf = q;
	} else {
		buf->exposed = len;
	}
	buf->refs = 1;
	channel = get_unaligned_le32(vmpi_buf_head(buf));
	e.buf = buf;
	e.off = VMPI_HDR_LEN;
	e.len = len - VMPI_HDR_LEN;
	spin_lock(&vd->lock);
	if (vmpi_rx_deliver_locked(vd, channel, &e, &t) == VMPI_RX_DROPPED)
		vmpi_rx_put_locked(buf, &done);
	spin_unlock(&vd->lock);
	vmpi_rx_account(vd, &t);
	vmpi_rx_release(vd, &done);
}

/* rx_work is done with packed rx buffer @buf: drop its reference; @exposed bytes get zeroed. */
static void vmpi_rx_unpack_end(struct vmpi_dev *vd, struct vmpi_buf *buf, unsigned int exposed)
{
	LIST_HEAD(done);

	vd->unpack = NULL;
	spin_lock(&vd->lock);
	buf->exposed = max(buf->exposed, exposed);
	vmpi_rx_put_locked(buf, &done);
	spin_unlock(&vd->lock);
	vmpi_rx_release(vd, &done);
}

/*
 * Deliver the records of packed rx buffer vd->unpack from vd->unpack_off on, until it is done,
 * a record is parked or @budget runs out (then vd->unpack stays for the next run). Each record
 * is queued where it lies (zero-copy: a reference on the buffer, which is reposted once the last
 * of its records is read), validated first: its header and SDU lie within used.len, its length
 * is at most max SDU. The offsets and lengths queued are the driver's own copy, read once.
 * rx_work only; vd->unpack holds a reference on the buffer until it is done with.
 */
static void vmpi_rx_unpack(struct vmpi_dev *vd, unsigned int *budget)
{
	struct vmpi_buf *buf = vd->unpack;
	unsigned int len = vd->unpack_len, off = vd->unpack_off;
	struct vmpi_rx_tally t = {};
	struct vmpi_file *f = NULL;
	u32 last_ch = 0;
	bool bad = false;

	if (len > buf->cap) {
		atomic64_inc(&vd->st.rx_malformed);
		atomic64_inc(&vd->st.rx_oversize);
		dev_warn_ratelimited(&vd->vdev->dev,
				     "%s: host used a packed rx buffer with length %u (buffers are %u bytes): dropped\n",
				     vd->name, len, buf->cap);
		vmpi_rx_unpack_end(vd, buf, buf->cap);
		return;
	}
	spin_lock(&vd->lock);
	while (off < len && !vd->park.buf && *budget) {
		unsigned int room, sdu_len;
		struct vmpi_rxent e;
		const u8 *h;
		u32 channel;

		/* Records are 8-aligned, so a header never crosses a page. */
		if (len - off < VMPI_REC_HDR_LEN) {
			atomic64_inc(&vd->st.rx_short);
			bad = true;
			break;
		}
		h = vmpi_buf_at(buf, off, &room);
		channel = get_unaligned_le32(h);
		sdu_len = get_unaligned_le32(h + 4);
		if (sdu_len > vd->max_sdu || sdu_len > len - off - VMPI_REC_HDR_LEN) {
			atomic64_inc(&vd->st.rx_oversize);
			bad = true;
			break;
		}
		e.buf = buf;
		e.off = off + VMPI_REC_HDR_LEN;
		e.len = sdu_len;
		off = ALIGN(e.off + sdu_len, VMPI_REC_ALIGN);
		(*budget)--;
		/* Runs of one channel are common: look it up once per run (the lock is held). */
		if (!f || channel != last_ch) {
			f = vmpi_find_locked(vd, channel);
			last_ch = channel;
		}
		buf->refs++;
		if (vmpi_rx_queue_locked(vd, f, channel, &e, &t) == VMPI_RX_DROPPED)
			buf->refs--;	/* vd->unpack still holds one */
	}
	spin_unlock(&vd->lock);
	vmpi_rx_account(vd, &t);
	vd->unpack_off = off;
	if (bad) {
		atomic64_inc(&vd->st.rx_malformed);
		dev_warn_ratelimited(&vd->vdev->dev,
				     "%s: packed rx buffer of used length %u has a bad record at offset %u: rest dropped\n",
				     vd->name, len, off);
		vmpi_rx_unpack_end(vd, buf, buf->cap);	/* whatever the host wrote goes with it */
	} else if (off >= len) {
		vmpi_rx_unpack_end(vd, buf, len);
	}
}

/* @f made room or let go of its channel: re-run rx_work now if a record waits for it. */
static void vmpi_rx_kick_locked(struct vmpi_dev *vd, struct vmpi_file *f)
{
	if (vd->park.buf && vd->parked_ch == f->channel && !vd->removed && !vd->resetting)
		mod_delayed_work(system_wq, &vd->rx_work, 0);
}

/*
 * The host broke virtqueue @vq (the virtio core found a used id out of range or not outstanding
 * and marked it broken): reset the device, at most once a second. Any context.
 */
static void vmpi_schedule_reset(struct vmpi_dev *vd)
{
	unsigned long next = READ_ONCE(vd->last_reset) + HZ;

	if (READ_ONCE(vd->removed) || READ_ONCE(vd->dead))
		return;
	queue_delayed_work(system_wq, &vd->reset_work,
			   vd->last_reset && time_before(jiffies, next) ? next - jiffies : 0);
}

/*
 * Post rx buffers until the ring is full: pool buffers first (zeroed when their last record was
 * read), new ones only when the pool is empty. Returns false if memory ran out.
 */
static bool vmpi_rx_refill(struct vmpi_dev *vd)
{
	struct vmpi_buf *buf;
	bool ok = true, added = false;
	int err;

	for (;;) {
		spin_lock(&vd->lock);
		buf = list_first_entry_or_null(&vd->rx_pool, struct vmpi_buf, node);
		if (buf) {
			list_del_init(&buf->node);
			vd->rx_pool_len--;
		}
		spin_unlock(&vd->lock);
		if (!buf) {
			buf = vmpi_buf_alloc_pages(vd->rx_cap, GFP_KERNEL | __GFP_NOWARN | __GFP_ZERO);
			if (!buf) {
				ok = false;
				break;
			}
			atomic64_inc(&vd->st.rx_buffers);
		}
		buf->refs = 0;
		buf->exposed = 0;
		err = virtqueue_add_inbuf(vd->rxvq, buf->sg, buf->npages, buf, GFP_KERNEL);
		if (err) {
			vmpi_buf_recycle(vd, buf);
			if (err != -ENOSPC)
				ok = false;
			break;
		}
		added = true;
	}
	if (added)
		virtqueue_kick(vd->rxvq);
	return ok;
}

static void vmpi_rx_work(struct work_struct *work)
{
	struct vmpi_dev *vd = container_of(to_delayed_work(work), struct vmpi_dev, rx_work);
	unsigned int budget = vd->packed ? VMPI_RX_REC_BUDGET : VMPI_RX_BUDGET, len;
	struct vmpi_rx_tally t = {};
	struct vmpi_buf *buf;
	struct vmpi_rxent e;
	LIST_HEAD(done);
	bool ok;

	if (READ_ONCE(vd->removed) || READ_ONCE(vd->resetting))
		return;	/* reset_work queues us again once the queues are back */
	spin_lock(&vd->lock);
	if (vd->park.buf) {
		e = vd->park;
		vd->park.buf = NULL;
		if (vmpi_rx_deliver_locked(vd, vd->parked_ch, &e, &t) == VMPI_RX_DROPPED)
			vmpi_rx_put_locked(e.buf, &done);
	}
	spin_unlock(&vd->lock);
	vmpi_rx_account(vd, &t);
	vmpi_rx_release(vd, &done);
	vmpi_rx_wake(vd);
	if (vd->park.buf)
		goto parked;
	for (;;) {
		/* vd->park is written only here (and by remove once we are cancelled). */
		while (budget && !vd->park.buf) {
			if (vd->unpack) {
				vmpi_rx_unpack(vd, &budget);
				continue;
			}
			buf = virtqueue_get_buf(vd->rxvq, &len);
			if (!buf)
				break;
			if (vd->packed) {
				buf->refs = 1;	/* vd->unpack's */
				vd->unpack = buf;
				vd->unpack_len = len;
				vd->unpack_off = 0;
				continue;
			}
			vmpi_rx_frame(vd, buf, len);
			budget--;
		}
		vmpi_rx_wake(vd);
		if (virtqueue_is_broken(vd->rxvq)) {
			vmpi_schedule_reset(vd);
			return;
		}
		ok = vmpi_rx_refill(vd);
		if (vd->park.buf)
			goto parked;
		if (!budget) {
			/* More work may be pending: let others run, then come back. */
			queue_delayed_work(system_wq, &vd->rx_work, 0);
			return;
		}
		if (virtqueue_enable_cb(vd->rxvq))
			break;
		virtqueue_disable_cb(vd->rxvq);
	}
	if (!ok)	/* out of memory: try again shortly */
		queue_delayed_work(system_wq, &vd->rx_work, HZ / 10);
	return;
parked:
	/*
	 * The rest stays in the used ring, callbacks stay off. A reader draining the channel, a
	 * close or the stall deadline brings us back (early runs just park again).
	 */
	queue_delayed_work(system_wq, &vd->rx_work, max_t(long, vd->park_deadline - jiffies, 1));
}

static void vmpi_rx_done(struct virtqueue *vq)
{
	struct vmpi_dev *vd = vq->vdev->priv;

	virtqueue_disable_cb(vq);
	mod_delayed_work(system_wq, &vd->rx_work, 0);
}

/* ---- transmit ---- */

/* Take used tx buffers off the ring onto @done (freed by the caller without the lock). */
static void vmpi_tx_reclaim_locked(struct vmpi_dev *vd, struct list_head *done)
{
	struct vmpi_buf *buf;
	unsigned int len;

	while ((buf = virtqueue_get_buf(vd->txvq, &len)))
		list_add(&buf->node, done);
	if (virtqueue_is_broken(vd->txvq))
		vmpi_schedule_reset(vd);
}

static void vmpi_tx_done(struct virtqueue *vq)
{
	struct vmpi_dev *vd = vq->vdev->priv;
	unsigned long flags;

	spin_lock_irqsave(&vd->tx_lock, flags);
	virtqueue_disable_cb(vq);
	vd->tx_seq++;
	spin_unlock_irqrestore(&vd->tx_lock, flags);
	wake_up_interruptible_poll(&vd->tx_wait, EPOLLOUT | EPOLLWRNORM);
}

static bool vmpi_tx_progress(struct vmpi_file *f, unsigned long seq)
{
	return READ_ONCE(f->vd->removed) || READ_ONCE(f->shutdown) || READ_ONCE(f->vd->tx_seq) != seq;
}

/*
 * Add tx buffers bufs[0..n) of @f to the tx ring, in order, as many as fit, with one kick;
 * buffer i carries sdus[i] SDUs of bytes[i] bytes in all. Waits for room unless @nonblock, but
 * only while none fits. Returns how many buffers were added (>= 1) or an error (-EAGAIN: none
 * fit and @nonblock). *@full_counted: this write() already counted a full ring in tx_full (once
 * per write, however long it waits).
 */
static int vmpi_tx_post_many(struct vmpi_file *f, struct vmpi_buf **bufs, const unsigned int *sdus,
			     const u64 *bytes_of, unsigned int n, bool nonblock, bool *full_counted)
{
	struct vmpi_dev *vd = f->vd;
	struct scatterlist one;
	unsigned long seq;
	LIST_HEAD(done);
	unsigned int added, nsdus;
	u64 bytes;
	int err;

	for (;;) {
		added = 0;
		nsdus = 0;
		bytes = 0;
		spin_lock_irq(&vd->tx_lock);
		if (vd->removed) {
			err = -ENODEV;
		} else if (f->shutdown) {
			err = -ESHUTDOWN;
		} else if (vd->resetting) {
			/* Wait for the reset (it bumps tx_seq), unless it failed. */
			err = vd->dead ? -EIO : -ENOSPC;
		} else {
			vmpi_tx_reclaim_locked(vd, &done);
			err = 0;
			while (added < n) {
				struct vmpi_buf *buf = bufs[added];
				struct scatterlist *sg = buf->sg;
				unsigned int nsg = buf->npages;

				if (!buf->npages) {
					sg_init_one(&one, buf->lin, buf->len);
					sg = &one;
					nsg = 1;
				}
				err = virtqueue_add_outbuf(vd->txvq, sg, nsg, buf, GFP_ATOMIC);
				if (err)
					break;
				nsdus += sdus[added];
				bytes += bytes_of[added];
				added++;
			}
			if (added) {
				err = 0;
				virtqueue_kick(vd->txvq);	/* under the lock: remove may follow */
				WRITE_ONCE(f->cst.tx_sdus, f->cst.tx_sdus + nsdus);
				WRITE_ONCE(f->cst.tx_bytes, f->cst.tx_bytes + bytes);
			} else if (err == -EIO) {
				/* The ring is broken: reset_work sets it up again; wait for it. */
				vmpi_schedule_reset(vd);
				err = -ENOSPC;
			} else if (err == -ENOSPC && !virtqueue_enable_cb_delayed(vd->txvq)) {
				/* Buffers were used meanwhile: reclaim and retry at once. */
				virtqueue_disable_cb(vd->txvq);
				spin_unlock_irq(&vd->tx_lock);
				continue;
			}
		}
		seq = vd->tx_seq;
		if (err == -ENOSPC && !*full_counted && !vd->resetting) {
			*full_counted = true;
			WRITE_ONCE(f->cst.tx_full, f->cst.tx_full + 1);
		}
		spin_unlock_irq(&vd->tx_lock);
		vmpi_buf_free_list(&done);
		if (added) {
			atomic64_add(nsdus, &vd->st.tx_frames);
			atomic64_add(bytes, &vd->st.tx_bytes);
			return added;
		}
		if (err != -ENOSPC)
			return err;
		if (nonblock)
			return -EAGAIN;
		if (wait_event_interruptible(vd->tx_wait, vmpi_tx_progress(f, seq)))
			return -ERESTARTSYS;
	}
}

/*
 * A tx frame for @f holding the @count SDU bytes at @src (packed tx: one record, its header
 * carrying the length too); an ERR_PTR on failure.
 */
static struct vmpi_buf *vmpi_tx_buf(struct vmpi_file *f, const char __user *src, size_t count)
{
	unsigned int hdr = f->vd->tx_packed ? VMPI_REC_HDR_LEN : VMPI_HDR_LEN;
	unsigned int len = hdr + count;
	struct vmpi_buf *buf;

	if (sizeof(*buf) + len <= PAGE_SIZE)
		buf = vmpi_buf_alloc_linear(len, GFP_KERNEL);
	else
		buf = vmpi_buf_alloc_pages(len, GFP_KERNEL);
	if (!buf)
		return ERR_PTR(-ENOMEM);
	buf->len = len;
	put_unaligned_le32(f->channel, vmpi_buf_head(buf));
	if (f->vd->tx_packed)
		put_unaligned_le32(count, (u8 *)vmpi_buf_head(buf) + VMPI_HDR_LEN);
	if (vmpi_buf_from_user(buf, hdr, src, count)) {
		vmpi_buf_free(buf);
		return ERR_PTR(-EFAULT);
	}
	return buf;
}

/*
 * The batch-write record at @off of the user buffer @ubuf (@count bytes): its SDU length in
 * *@len, or -EINVAL (it runs past the end, or 1..3 bytes left over), -EMSGSIZE (over max SDU),
 * -EFAULT.
 */
static int vmpi_tx_rec(struct vmpi_dev *vd, const char __user *ubuf, size_t count, size_t off,
		       u32 *len)
{
	__le32 le;

	if (count - off < VMPI_HDR_LEN)
		return -EINVAL;
	if (copy_from_user(&le, ubuf + off, sizeof(le)))
		return -EFAULT;
	*len = le32_to_cpu(le);
	if (*len > vd->max_sdu)
		return -EMSGSIZE;
	if (*len > count - off - VMPI_HDR_LEN)
		return -EINVAL;
	return 0;
}

/* Cut page buffer @buf down to its first @len (> 0) bytes: the pages and scatterlist it needs. */
static void vmpi_tx_trim(struct vmpi_buf *buf, unsigned int len)
{
	unsigned int n, i;

	buf->len = len;
	if (!buf->npages)
		return;
	n = DIV_ROUND_UP(len, PAGE_SIZE);
	for (i = n; i < buf->npages; i++) {
		__free_page(buf->pages[i]);
		buf->pages[i] = NULL;
	}
	buf->npages = n;
	buf->cap = len;
	sg_set_page(&buf->sg[n - 1], buf->pages[n - 1], len - (n - 1) * PAGE_SIZE, 0);
	sg_mark_end(&buf->sg[n - 1]);
}

/*
 * Packed tx: one tx buffer holding as many of the batch-write records at @ubuf[*@off..@count)
 * as fit in 8 + max SDU bytes, each as "le32 channel | le32 length | SDU" at a multiple of
 * VMPI_REC_ALIGN (padding zeroed: no guest memory reaches the host), the buffer ending at the
 * last record. *@off moves past the records taken (their padding included, at most @count);
 * *@sdus and *@bytes count them. A bad record ends the buffer: the records before it are
 * returned and its error is left in *@err; NULL (and *@err) when the first one is bad or
 * there is no memory.
 */
static struct vmpi_buf *vmpi_tx_pack(struct vmpi_file *f, const char __user *ubuf, size_t count,
				     size_t *off, unsigned int *sdus, u64 *bytes, int *err)
{
	struct vmpi_dev *vd = f->vd;
	unsigned int pos = 0, cap;
	struct vmpi_buf *buf;
	u32 len;

	*sdus = 0;
	*bytes = 0;
	*err = vmpi_tx_rec(vd, ubuf, count, *off, &len);
	if (*err)
		return NULL;
	/*
	 * A user record of 4 + len bytes (padded to 4) takes at most twice that packed (8 + len,
	 * padded to 8), so this never allocates much more than the records need.
	 */
	cap = min_t(size_t, VMPI_REC_HDR_LEN + vd->max_sdu, 2 * (count - *off));
	if (sizeof(*buf) + cap <= PAGE_SIZE)
		buf = vmpi_buf_alloc_linear(cap, GFP_KERNEL);
	else
		buf = vmpi_buf_alloc_pages(cap, GFP_KERNEL);
	if (!buf) {
		*err = -ENOMEM;
		return NULL;
	}
	for (;;) {
		unsigned int at = ALIGN(pos, VMPI_REC_ALIGN), room;
		u8 *p;

		if (at + VMPI_REC_HDR_LEN + len > cap)
			break;		/* the next buffer takes it (the first always fits) */
		/* Padding and header lie in one 8-byte block, so in one page. */
		p = vmpi_buf_at(buf, pos, &room);
		memset(p, 0, at - pos);
		p = vmpi_buf_at(buf, at, &room);
		put_unaligned_le32(f->channel, p);
		put_unaligned_le32(len, p + 4);
		if (vmpi_buf_from_user(buf, at + VMPI_REC_HDR_LEN, ubuf + *off + VMPI_HDR_LEN, len)) {
			*err = -EFAULT;
			break;
		}
		pos = at + VMPI_REC_HDR_LEN + len;
		(*sdus)++;
		*bytes += len;
		*off = min_t(size_t, ALIGN(*off + VMPI_HDR_LEN + len, VMPI_BATCH_ALIGN), count);
		if (*off >= count)
			break;
		*err = vmpi_tx_rec(vd, ubuf, count, *off, &len);
		if (*err)
			break;
	}
	if (!*sdus) {
		vmpi_buf_free(buf);
		return NULL;
	}
	vmpi_tx_trim(buf, pos);
	return buf;
}

/* ---- file operations ---- */

static int vmpi_open(struct inode *inode, struct file *file)
{
	/* misc_open() holds misc_mtx, so the device cannot be deregistered under us. */
	struct vmpi_dev *vd = container_of(file->private_data, struct vmpi_dev, misc);
	struct vmpi_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	f->rxq = kvmalloc_array(rx_queue_len, sizeof(*f->rxq), GFP_KERNEL);
	if (!f->rxq) {
		kfree(f);
		return -ENOMEM;
	}
	kref_get(&vd->kref);
	f->vd = vd;
	mutex_init(&f->read_mutex);
	INIT_HLIST_NODE(&f->hnode);
	init_waitqueue_head(&f->rq);
	file->private_data = f;
	return stream_open(inode, file);
}

static int vmpi_release(struct inode *inode, struct file *file)
{
	struct vmpi_file *f = file->private_data;
	struct vmpi_dev *vd = f->vd;
	struct vmpi_rxent e;
	LIST_HEAD(done);

	spin_lock(&vd->lock);
	if (f->bound) {
		hash_del(&f->hnode);
		vmpi_rx_kick_locked(vd, f);	/* its parked record is now unbound */
	}
	while (f->rx_count) {		/* a shut-down file may still hold SDUs */
		vmpi_rx_pop_locked(f, &e);
		vmpi_rx_put_locked(e.buf, &done);
	}
	spin_unlock(&vd->lock);
	vmpi_rx_release(vd, &done);	/* buffers of no other queue go back to the ring */
	kvfree(f->rxq);
	kfree(f);
	vmpi_dev_put(vd);
	return 0;
}

static bool vmpi_rx_ready(struct vmpi_file *f)
{
	return READ_ONCE(f->rx_count) || READ_ONCE(f->vd->removed) || READ_ONCE(f->shutdown);
}

/* Why there is nothing to read: shut down, not bound, or not yet. Under vd->lock. */
static int vmpi_rx_empty_err(struct vmpi_file *f)
{
	return f->shutdown ? -ESHUTDOWN : f->bound ? -EAGAIN : -ENOTCONN;
}

/*
 * One SDU per read(), or in batch mode (VMPI_IOC_SET_BATCH) as many whole SDUs as fit, each as
 * a le32 length and the SDU, padded to VMPI_BATCH_ALIGN: one system call for a burst. Records
 * are copied straight out of the rx buffers they arrived in, VMPI_READ_CHUNK at a time (taken
 * off the queue under vd->lock, copied without it, then their buffers' references dropped:
 * a buffer whose last record this was goes back to the ring). read_mutex keeps one read()'s
 * records consecutive when several threads read one file.
 */
#define VMPI_READ_CHUNK	16

static ssize_t vmpi_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct vmpi_file *f = file->private_data;
	struct vmpi_dev *vd = f->vd;
	bool batch = READ_ONCE(f->batch);
	unsigned int hdr = batch ? VMPI_HDR_LEN : 0, n, i;
	struct vmpi_rxent ents[VMPI_READ_CHUNK];
	size_t planned = 0, off = 0;
	LIST_HEAD(done);
	ssize_t ret;
	int err = 0;
	bool more;

	if (mutex_lock_interruptible(&f->read_mutex))
		return -ERESTARTSYS;
	do {
		n = 0;
		ret = 0;
		spin_lock(&vd->lock);
		if (vd->removed) {
			ret = -ENODEV;
		} else if (!f->rx_count) {
			ret = off ? 0 : vmpi_rx_empty_err(f);
		} else {
			while (n < VMPI_READ_CHUNK && f->rx_count) {
				size_t rec = hdr + f->rxq[f->rx_head].len;

				if (batch)
					rec = ALIGN(rec, VMPI_BATCH_ALIGN);
				/* Never truncate: an SDU that does not fit stays queued for a bigger read. */
				if (planned + rec > count)
					break;
				planned += rec;
				vmpi_rx_pop_locked(f, &ents[n++]);
				if (!batch)
					break;
			}
			if (!n && !off)
				ret = -EMSGSIZE;
			/* After shutdown the channel may be someone else's. */
			if (n && f->bound && vmpi_rx_low(f)) {
				f->full = f->stalled = false;
				vmpi_rx_kick_locked(vd, f);
			} else if (n && f->full && !f->stalled && vmpi_rx_progress(f)) {
				/* Slow, not stuck: the parked frame waits a full rx_stall_ms more. */
				vmpi_rx_clock_locked(f);
			}
		}
		more = batch && n == VMPI_READ_CHUNK && f->rx_count;
		spin_unlock(&vd->lock);
		if (ret == -EAGAIN && !(file->f_flags & O_NONBLOCK)) {
			/* Nothing yet: wait without the mutex (other readers may wait too). */
			mutex_unlock(&f->read_mutex);
			if (wait_event_interruptible(f->rq, vmpi_rx_ready(f)))
				return -ERESTARTSYS;
			if (mutex_lock_interruptible(&f->read_mutex))
				return -ERESTARTSYS;
			more = true;
			ret = 0;
			continue;
		}
		for (i = 0; i < n; i++) {
			__le32 len_le = cpu_to_le32(ents[i].len);

			if (!err && hdr && copy_to_user(ubuf + off, &len_le, hdr))
				err = -EFAULT;
			if (!err)
				err = vmpi_buf_to_user(ents[i].buf, ents[i].off, ubuf + off + hdr,
						       ents[i].len);
			off += batch ? ALIGN(hdr + ents[i].len, VMPI_BATCH_ALIGN) : ents[i].len;
		}
		if (n) {
			spin_lock(&vd->lock);
			for (i = 0; i < n; i++)
				vmpi_rx_put_locked(ents[i].buf, &done);
			spin_unlock(&vd->lock);
			vmpi_rx_release(vd, &done);
		}
	} while (more && !err && !ret);
	mutex_unlock(&f->read_mutex);
	if (err)
		return err;
	return off ? off : ret;
}

/*
 * Batch-mode write (VMPI_BATCH_WRITE): records "le32 length | SDU" at multiples of
 * VMPI_BATCH_ALIGN from the start of the buffer (the last may end without its padding), each
 * sent as one frame. Frames are copied VMPI_TX_BATCH at a time and added to the ring under one
 * lock and one kick. Returns the bytes of the whole records sent, a prefix of the buffer (the
 * padding of its last record included, at most @count); an error only when no record was sent:
 * -EINVAL for a record that runs past the end (or 1..3 bytes left over), -EMSGSIZE for one over
 * max SDU, -EAGAIN (O_NONBLOCK) when the ring had no room, or what a single write() returns.
 */
#define VMPI_TX_BATCH	16

static ssize_t vmpi_write_batch(struct vmpi_file *f, const char __user *ubuf, size_t count,
				bool nonblock)
{
	struct vmpi_dev *vd = f->vd;
	struct vmpi_buf *bufs[VMPI_TX_BATCH];
	unsigned int sdus[VMPI_TX_BATCH];
	u64 bytes[VMPI_TX_BATCH];
	size_t ends[VMPI_TX_BATCH];
	size_t off = 0, sent = 0;
	bool full_counted = false;
	int err = 0;

	while (!err && off < count) {
		unsigned int n = 0, i = 0;

		/*
		 * Copy up to VMPI_TX_BATCH buffers' worth of records (packed tx: many records per
		 * buffer; else one frame each); a bad record ends the batch.
		 */
		while (!err && n < VMPI_TX_BATCH && off < count) {
			struct vmpi_buf *buf;
			u32 len;

			if (vd->tx_packed) {
				buf = vmpi_tx_pack(f, ubuf, count, &off, &sdus[n], &bytes[n], &err);
				if (!buf)
					break;
			} else {
				err = vmpi_tx_rec(vd, ubuf, count, off, &len);
				if (err)
					break;
				buf = vmpi_tx_buf(f, ubuf + off + VMPI_HDR_LEN, len);
				if (IS_ERR(buf)) {
					err = PTR_ERR(buf);
					break;
				}
				off = min_t(size_t, ALIGN(off + VMPI_HDR_LEN + len, VMPI_BATCH_ALIGN), count);
				sdus[n] = 1;
				bytes[n] = len;
			}
			bufs[n] = buf;
			ends[n++] = off;
		}
		/* Post them in order; a prefix may go when the ring fills (O_NONBLOCK) or on a signal. */
		while (i < n) {
			int r = vmpi_tx_post_many(f, bufs + i, sdus + i, bytes + i, n - i, nonblock,
						  &full_counted);

			if (r < 0) {
				err = r;
				break;
			}
			i += r;
			sent = ends[i - 1];
		}
		for (; i < n; i++)
			vmpi_buf_free(bufs[i]);
		if (!err)
			cond_resched();
	}
	return sent ? sent : err;
}

static ssize_t vmpi_write(struct file *file, const char __user *ubuf, size_t count,
			  loff_t *ppos)
{
	struct vmpi_file *f = file->private_data;
	struct vmpi_dev *vd = f->vd;
	bool full_counted = false;
	unsigned int one = 1;
	struct vmpi_buf *buf;
	u64 bytes = count;
	int err;

	if (READ_ONCE(vd->removed))
		return -ENODEV;
	if (!smp_load_acquire(&f->bound))
		return READ_ONCE(f->shutdown) ? -ESHUTDOWN : -ENOTCONN;
	if (READ_ONCE(f->batch_write))
		return vmpi_write_batch(f, ubuf, count, file->f_flags & O_NONBLOCK);
	if (count > vd->max_sdu)
		return -EMSGSIZE;
	buf = vmpi_tx_buf(f, ubuf, count);
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	err = vmpi_tx_post_many(f, &buf, &one, &bytes, 1, file->f_flags & O_NONBLOCK, &full_counted);
	if (err < 0) {
		vmpi_buf_free(buf);
		return err;
	}
	return count;
}

static __poll_t vmpi_poll(struct file *file, poll_table *wait)
{
	struct vmpi_file *f = file->private_data;
	struct vmpi_dev *vd = f->vd;
	__poll_t mask = 0;
	LIST_HEAD(done);

	poll_wait(file, &f->rq, wait);
	poll_wait(file, &vd->tx_wait, wait);

	spin_lock(&vd->lock);
	if (vd->removed)
		mask = EPOLLERR | EPOLLHUP | EPOLLIN | EPOLLOUT;
	else if (f->shutdown)	/* no EPOLLERR: the reader drains, then reads -ESHUTDOWN */
		mask = EPOLLIN | EPOLLRDNORM | EPOLLHUP | EPOLLOUT;
	else if (f->bound && f->rx_count)
		mask |= EPOLLIN | EPOLLRDNORM;
	spin_unlock(&vd->lock);
	if (mask & EPOLLHUP || !smp_load_acquire(&f->bound))
		return mask;

	spin_lock_irq(&vd->tx_lock);
	if (!vd->removed && !vd->resetting) {
		vmpi_tx_reclaim_locked(vd, &done);
		if (vd->txvq->num_free < vd->tx_slots &&
		    !virtqueue_enable_cb_delayed(vd->txvq)) {
			virtqueue_disable_cb(vd->txvq);
			vmpi_tx_reclaim_locked(vd, &done);
		}
		if (vd->txvq->num_free >= vd->tx_slots)
			mask |= EPOLLOUT | EPOLLWRNORM;
	}
	spin_unlock_irq(&vd->tx_lock);
	vmpi_buf_free_list(&done);
	return mask;
}

static long vmpi_get_info(struct vmpi_file *f, struct vmpi_info __user *uinfo)
{
	struct vmpi_dev *vd = f->vd;
	struct vmpi_info info;

	memset(&info, 0, sizeof(info));
	info.max_sdu = vd->max_sdu;
	info.index = vd->index;
	info.rx_queue_len = rx_queue_len;
	spin_lock(&vd->lock);
	info.vmpi_id = READ_ONCE(vd->vmpi_id);
	if (f->bound) {
		info.flags |= VMPI_INFO_F_BOUND;
		info.channel = f->channel;
	}
	info.rx_queued = f->rx_count;
	if (vd->removed)
		info.flags |= VMPI_INFO_F_REMOVED;
	if (f->shutdown)
		info.flags |= VMPI_INFO_F_SHUTDOWN;
	spin_unlock(&vd->lock);
	info.stats.rx_frames = atomic64_read(&vd->st.rx_frames);
	info.stats.rx_bytes = atomic64_read(&vd->st.rx_bytes);
	info.stats.tx_frames = atomic64_read(&vd->st.tx_frames);
	info.stats.tx_bytes = atomic64_read(&vd->st.tx_bytes);
	info.stats.rx_drops_unbound = atomic64_read(&vd->st.rx_drops_unbound);
	info.stats.rx_drops_full = atomic64_read(&vd->st.rx_drops_full);
	info.stats.rx_malformed = atomic64_read(&vd->st.rx_malformed);
	info.stats.rx_drops_nomem = atomic64_read(&vd->st.rx_drops_nomem);
	info.stats.rx_drops_stalled = atomic64_read(&vd->st.rx_drops_stalled);
	return copy_to_user(uinfo, &info, sizeof(info)) ? -EFAULT : 0;
}

static long vmpi_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct vmpi_file *f = file->private_data;
	struct vmpi_dev *vd = f->vd;
	void __user *uarg = (void __user *)arg;
	u32 channel, len = 0;
	long ret = 0;

	switch (cmd) {
	case VMPI_IOC_BIND:
		if (get_user(channel, (u32 __user *)uarg))
			return -EFAULT;
		spin_lock(&vd->lock);
		if (vd->removed) {
			ret = -ENODEV;
		} else if (f->shutdown) {
			ret = -ESHUTDOWN;
		} else if (f->bound) {
			ret = -EINVAL;
		} else if (vmpi_find_locked(vd, channel)) {
			ret = -EBUSY;
		} else {
			f->channel = channel;
			hash_add(vd->chans, &f->hnode, channel);
			smp_store_release(&f->bound, true);
		}
		spin_unlock(&vd->lock);
		return ret;
	case VMPI_IOC_GET_INFO:
		return vmpi_get_info(f, uarg);
	case VMPI_IOC_NEXT_LEN:
		spin_lock(&vd->lock);
		if (vd->removed)
			ret = -ENODEV;
		else if (!f->rx_count)
			ret = vmpi_rx_empty_err(f);
		else
			len = f->rxq[f->rx_head].len;
		spin_unlock(&vd->lock);
		if (ret)
			return ret;
		return put_user(len, (u32 __user *)uarg);
	case VMPI_IOC_SET_BATCH:
		if (get_user(len, (u32 __user *)uarg))
			return -EFAULT;
		if (len & ~(VMPI_BATCH_READ | VMPI_BATCH_WRITE))
			return -EINVAL;
		WRITE_ONCE(f->batch, !!(len & VMPI_BATCH_READ));
		WRITE_ONCE(f->batch_write, !!(len & VMPI_BATCH_WRITE));
		return 0;
	case VMPI_IOC_SHUTDOWN:
		spin_lock(&vd->lock);
		spin_lock_irq(&vd->tx_lock);
		if (vd->removed)
			ret = -ENODEV;
		else
			WRITE_ONCE(f->shutdown, true);
		spin_unlock_irq(&vd->tx_lock);
		if (!ret && f->bound) {
			hash_del(&f->hnode);	/* the channel can be bound again at once */
			smp_store_release(&f->bound, false);
			vmpi_rx_kick_locked(vd, f);	/* its parked frame is now unbound */
		}
		spin_unlock(&vd->lock);
		if (ret)
			return ret;
		wake_up_interruptible_poll(&f->rq, EPOLLIN | EPOLLRDNORM | EPOLLHUP | EPOLLOUT);
		wake_up_interruptible_all(&vd->tx_wait);	/* its blocked writers */
		return 0;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations vmpi_fops = {
	.owner		= THIS_MODULE,
	.open		= vmpi_open,
	.release	= vmpi_release,
	.read		= vmpi_read,
	.write		= vmpi_write,
	.poll		= vmpi_poll,
	.unlocked_ioctl	= vmpi_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= no_llseek,
};

/* ---- sysfs (attributes of the virtio device) ---- */

static struct vmpi_dev *dev_to_vmpi(struct device *dev)
{
	return dev_to_virtio(dev)->priv;
}

#define VMPI_STAT_ATTR(field)							\
static ssize_t field##_show(struct device *dev, struct device_attribute *attr,	\
			    char *buf)						\
{										\
	return sysfs_emit(buf, "%lld\n",					\
			  (long long)atomic64_read(&dev_to_vmpi(dev)->st.field));	\
}										\
static DEVICE_ATTR_RO(field)

VMPI_STAT_ATTR(rx_frames);
VMPI_STAT_ATTR(rx_bytes);
VMPI_STAT_ATTR(tx_frames);
VMPI_STAT_ATTR(tx_bytes);
VMPI_STAT_ATTR(rx_drops_unbound);
VMPI_STAT_ATTR(rx_drops_full);
VMPI_STAT_ATTR(rx_malformed);
VMPI_STAT_ATTR(rx_drops_nomem);
VMPI_STAT_ATTR(rx_drops_stalled);
VMPI_STAT_ATTR(rx_short);
VMPI_STAT_ATTR(rx_oversize);
VMPI_STAT_ATTR(ring_resets);
VMPI_STAT_ATTR(config_rejected);
VMPI_STAT_ATTR(rx_buffers);
VMPI_STAT_ATTR(rx_copied);

static ssize_t vmpi_id_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", READ_ONCE(dev_to_vmpi(dev)->vmpi_id));
}
static DEVICE_ATTR_RO(vmpi_id);

static ssize_t max_sdu_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", dev_to_vmpi(dev)->max_sdu);
}
static DEVICE_ATTR_RO(max_sdu);

static ssize_t devname_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", dev_to_vmpi(dev)->name);
}
static DEVICE_ATTR_RO(devname);

static ssize_t channels_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vmpi_dev *vd = dev_to_vmpi(dev);
	struct vmpi_file *f;
	int bkt, n = 0;

	spin_lock(&vd->lock);
	hash_for_each(vd->chans, bkt, f, hnode)
		if (n < PAGE_SIZE - 24)
			n += sysfs_emit_at(buf, n, "%u:%u ", f->channel, f->rx_count);
	spin_unlock(&vd->lock);
	return n + sysfs_emit_at(buf, n, "\n");
}
static DEVICE_ATTR_RO(channels);

/*
 * channel_stats: a header line naming the columns, then one line per bound channel (hash
 * order), space-separated decimal u64s; docs/DEVICE.md ("sysfs") is the format. Readers map
 * columns by the header's names, so columns may be appended later. What does not fit the page
 * is left out and said on a last line "# truncated N" (N channels not shown).
 */
#define VMPI_CHANNEL_STATS_HDR "channel rx_sdus rx_bytes tx_sdus tx_bytes rx_drops_full " \
			       "rx_drops_stalled rx_full tx_full rx_queued rx_queued_bytes\n"
#define VMPI_CHANNEL_STATS_LINE 220	/* > 11 u64s and their spaces */

static ssize_t channel_stats_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vmpi_dev *vd = dev_to_vmpi(dev);
	struct vmpi_file *f;
	int bkt, n, skipped = 0;

	n = sysfs_emit(buf, VMPI_CHANNEL_STATS_HDR);
	spin_lock(&vd->lock);
	hash_for_each(vd->chans, bkt, f, hnode) {
		if (n > PAGE_SIZE - VMPI_CHANNEL_STATS_LINE - 32) {
			skipped++;
			continue;
		}
		n += sysfs_emit_at(buf, n, "%u %llu %llu %llu %llu %llu %llu %llu %llu %u %u\n",
				   f->channel,
				   (unsigned long long)READ_ONCE(f->cst.rx_sdus),
				   (unsigned long long)READ_ONCE(f->cst.rx_bytes),
				   (unsigned long long)READ_ONCE(f->cst.tx_sdus),
				   (unsigned long long)READ_ONCE(f->cst.tx_bytes),
				   (unsigned long long)READ_ONCE(f->cst.rx_drops_full),
				   (unsigned long long)READ_ONCE(f->cst.rx_drops_stalled),
				   (unsigned long long)READ_ONCE(f->cst.rx_full),
				   (unsigned long long)READ_ONCE(f->cst.tx_full),
				   f->rx_count, f->rx_bytes);
	}
	spin_unlock(&vd->lock);
	if (skipped)
		n += sysfs_emit_at(buf, n, "# truncated %d\n", skipped);
	return n;
}
static DEVICE_ATTR_RO(channel_stats);

static struct attribute *vmpi_attrs[] = {
	&dev_attr_vmpi_id.attr,
	&dev_attr_max_sdu.attr,
	&dev_attr_devname.attr,
	&dev_attr_channels.attr,
	&dev_attr_channel_stats.attr,
	&dev_attr_rx_frames.attr,
	&dev_attr_rx_bytes.attr,
	&dev_attr_tx_frames.attr,
	&dev_attr_tx_bytes.attr,
	&dev_attr_rx_drops_unbound.attr,
	&dev_attr_rx_drops_full.attr,
	&dev_attr_rx_malformed.attr,
	&dev_attr_rx_drops_nomem.attr,
	&dev_attr_rx_drops_stalled.attr,
	&dev_attr_rx_short.attr,
	&dev_attr_rx_oversize.attr,
	&dev_attr_ring_resets.attr,
	&dev_attr_config_rejected.attr,
	&dev_attr_rx_buffers.attr,
	&dev_attr_rx_copied.attr,
	NULL,
};
ATTRIBUTE_GROUPS(vmpi);

/* ---- virtio driver ---- */

/*
 * Re-read the config (config interrupt, or after a reset). Only the VMPI-id may change: the
 * buffers are sized by the max SDU of probe time, so a config with another magic, version or
 * max_sdu_log2 is ignored as a whole (counted).
 */
static void vmpi_config_check(struct vmpi_dev *vd)
{
	struct virtio_device *vdev = vd->vdev;
	u8 version, sdu_log2;
	u32 magic;
	u16 id;

	virtio_cread_le(vdev, struct vmpi_config, magic, &magic);
	virtio_cread_le(vdev, struct vmpi_config, version, &version);
	virtio_cread_le(vdev, struct vmpi_config, max_sdu_log2, &sdu_log2);
	virtio_cread_le(vdev, struct vmpi_config, vmpi_id, &id);
	if (magic != VMPI_MAGIC || version != VMPI_VERSION || sdu_log2 != vd->sdu_log2) {
		atomic64_inc(&vd->st.config_rejected);
		dev_warn_ratelimited(&vdev->dev,
				     "%s: host changed the device config (magic %#x version %u max_sdu_log2 %u, probed with max_sdu_log2 %u): ignored\n",
				     vd->name, magic, version, sdu_log2, vd->sdu_log2);
		return;
	}
	if (id != READ_ONCE(vd->vmpi_id)) {
		dev_info(&vdev->dev, "%s: vmpi_id %u -> %u\n", vd->name, vd->vmpi_id, id);
		WRITE_ONCE(vd->vmpi_id, id);
	}
}

static void vmpi_config_work(struct work_struct *work)
{
	vmpi_config_check(container_of(work, struct vmpi_dev, config_work));
}

static void vmpi_config_changed(struct virtio_device *vdev)
{
	struct vmpi_dev *vd = vdev->priv;

	schedule_work(&vd->config_work);
}

/* Set up both virtqueues (probe, restore); the tx callback starts disabled. */
static int vmpi_find_vqs(struct vmpi_dev *vd)
{
	struct virtio_device *vdev = vd->vdev;
	struct virtqueue *vqs[2];
	vq_callback_t *cbs[2] = { vmpi_rx_done, vmpi_tx_done };
	static const char * const names[2] = { "rx", "tx" };
	int err;

	err = virtio_find_vqs(vdev, 2, vqs, cbs, names, NULL);
	if (err)
		return err;
	if (!vd->tx_slots || vd->tx_slots > virtqueue_get_vring_size(vqs[1]) ||
	    (!virtio_has_feature(vdev, VIRTIO_RING_F_INDIRECT_DESC) &&
	     vd->frame_pages > virtqueue_get_vring_size(vqs[0]))) {
		dev_err(&vdev->dev, "rings too small for %u-byte SDUs without indirect descriptors\n",
			vd->max_sdu);
		vdev->config->del_vqs(vdev);
		return -EINVAL;
	}
	vd->rxvq = vqs[0];
	vd->txvq = vqs[1];
	virtqueue_disable_cb(vd->txvq);	/* enabled only while the tx ring is full */
	return 0;
}

/*
 * Quiesce and tear down the virtqueues (a reset, or suspend). Open files stay; queued SDUs and
 * a parked frame are kept; tx frames the host had not used yet are lost.
 */
static int __maybe_unused vmpi_freeze(struct virtio_device *vdev)
{
	struct vmpi_dev *vd = vdev->priv;
	struct vmpi_buf *buf;
	LIST_HEAD(done);

	spin_lock(&vd->lock);
	spin_lock_irq(&vd->tx_lock);
	vd->resetting = true;
	spin_unlock_irq(&vd->tx_lock);
	spin_unlock(&vd->lock);
	virtio_reset_device(vdev);	/* no more interrupts, the host stops using the rings */
	cancel_delayed_work_sync(&vd->rx_work);
	cancel_work_sync(&vd->config_work);
	while ((buf = virtqueue_detach_unused_buf(vd->rxvq))) {
		atomic64_dec(&vd->st.rx_buffers);
		vmpi_buf_free(buf);
	}
	spin_lock_irq(&vd->tx_lock);
	while ((buf = virtqueue_detach_unused_buf(vd->txvq)))
		list_add(&buf->node, &done);
	spin_unlock_irq(&vd->tx_lock);
	vmpi_buf_free_list(&done);
	vdev->config->del_vqs(vdev);
	vd->rxvq = vd->txvq = NULL;
	return 0;
}

/* Set the virtqueues up again after vmpi_freeze; virtio_device_restore has reset the device. */
static int __maybe_unused vmpi_restore(struct virtio_device *vdev)
{
	struct vmpi_dev *vd = vdev->priv;
	int err;

	err = vmpi_find_vqs(vd);
	if (err)
		return err;
	vmpi_config_check(vd);
	virtio_device_ready(vdev);
	spin_lock(&vd->lock);
	spin_lock_irq(&vd->tx_lock);
	vd->resetting = false;
	vd->tx_seq++;			/* writers waiting for the reset retry */
	spin_unlock_irq(&vd->tx_lock);
	spin_unlock(&vd->lock);
	queue_delayed_work(system_wq, &vd->rx_work, 0);	/* refill, then the parked frame */
	wake_up_interruptible_all(&vd->tx_wait);
	return 0;
}

/*
 * The host broke a virtqueue: the virtio core no longer hands out its buffers, so the only way
 * on is a device reset (as for suspend/resume). Open files and queued SDUs survive it.
 */
static void vmpi_reset_work(struct work_struct *work)
{
	struct vmpi_dev *vd = container_of(to_delayed_work(work), struct vmpi_dev, reset_work);
	struct virtio_device *vdev = vd->vdev;
	bool rx_broken, tx_broken;
	int err = 0;

	/*
	 * Suspend/resume and remove run under the device lock: take it so that they never overlap
	 * a reset. Remove waits for this work while holding the lock, hence only a try (the retry
	 * is cancelled by remove's cancel_delayed_work_sync).
	 */
	if (!device_trylock(&vdev->dev)) {
		if (!READ_ONCE(vd->removed))
			queue_delayed_work(system_wq, &vd->reset_work, HZ / 10);
		return;
	}
	spin_lock(&vd->lock);
	if (vd->removed || vd->resetting) {
		spin_unlock(&vd->lock);
		goto out;
	}
	spin_unlock(&vd->lock);
	rx_broken = virtqueue_is_broken(vd->rxvq);
	tx_broken = virtqueue_is_broken(vd->txvq);
	if (!rx_broken && !tx_broken)
		goto out;
	WRITE_ONCE(vd->last_reset, jiffies);
	atomic64_inc(&vd->st.ring_resets);
	dev_warn_ratelimited(&vdev->dev,
			     "%s: the host broke the %s virtqueue (used id out of range or not outstanding): resetting the device\n",
			     vd->name, rx_broken ? (tx_broken ? "rx and tx" : "rx") : "tx");
#ifdef CONFIG_PM_SLEEP
	err = virtio_device_freeze(vdev);
	if (!err)
		err = virtio_device_restore(vdev);
#else
	err = -EOPNOTSUPP;	/* virtio_device_freeze/restore need CONFIG_PM_SLEEP */
#endif
	if (err) {
		dev_err(&vdev->dev, "%s: reset failed (%d): the device is unusable until removed\n",
			vd->name, err);
		spin_lock(&vd->lock);
		spin_lock_irq(&vd->tx_lock);
		vd->dead = true;	/* resetting stays set: nobody touches the queues */
		vd->tx_seq++;		/* waiting writers return -EIO */
		spin_unlock_irq(&vd->tx_lock);
		spin_unlock(&vd->lock);
		wake_up_interruptible_all(&vd->tx_wait);
	}
out:
	device_unlock(&vdev->dev);
}

static int vmpi_probe(struct virtio_device *vdev)
{
	u8 version, sdu_log2;
	struct vmpi_dev *vd;
	void *buf;
	u32 magic;
	u16 id;
	int err;

	if (!vdev->config->get)
		return -ENODEV;
	virtio_cread_le(vdev, struct vmpi_config, magic, &magic);
	virtio_cread_le(vdev, struct vmpi_config, version, &version);
	if (magic != VMPI_MAGIC || version != VMPI_VERSION) {
		dev_dbg(&vdev->dev, "not a VMPI device (magic %#x version %u)\n", magic, version);
		return -ENODEV;
	}
	virtio_cread_le(vdev, struct vmpi_config, max_sdu_log2, &sdu_log2);
	virtio_cread_le(vdev, struct vmpi_config, vmpi_id, &id);
	if (sdu_log2 > VMPI_MAX_SDU_LOG2) {
		dev_err(&vdev->dev, "max_sdu_log2 %u not supported (max %u)\n",
			sdu_log2, VMPI_MAX_SDU_LOG2);
		return -EINVAL;
	}

	vd = kzalloc(sizeof(*vd), GFP_KERNEL);
	if (!vd)
		return -ENOMEM;
	kref_init(&vd->kref);
	vd->vdev = vdev;
	vd->vmpi_id = id;
	vd->sdu_log2 = sdu_log2;
	vd->max_sdu = 1u << sdu_log2;
	vd->packed = virtio_has_feature(vdev, VMPI_F_RX_PACKED);
	vd->rx_cap = (vd->packed ? VMPI_REC_HDR_LEN : VMPI_HDR_LEN) + vd->max_sdu;
	vd->frame_pages = DIV_ROUND_UP(vd->rx_cap, PAGE_SIZE);
	vd->tx_packed = virtio_has_feature(vdev, VMPI_F_TX_PACKED);
	/* Direct descriptors: one per page of the largest tx buffer (packed tx: 8 + max SDU). */
	vd->tx_slots = virtio_has_feature(vdev, VIRTIO_RING_F_INDIRECT_DESC) ? 1 :
		DIV_ROUND_UP((vd->tx_packed ? VMPI_REC_HDR_LEN : VMPI_HDR_LEN) + vd->max_sdu, PAGE_SIZE);
	spin_lock_init(&vd->lock);
	spin_lock_init(&vd->tx_lock);
	hash_init(vd->chans);
	INIT_LIST_HEAD(&vd->rx_pool);
	INIT_DELAYED_WORK(&vd->rx_work, vmpi_rx_work);
	INIT_WORK(&vd->config_work, vmpi_config_work);
	INIT_DELAYED_WORK(&vd->reset_work, vmpi_reset_work);
	init_waitqueue_head(&vd->tx_wait);

	vd->index = ida_alloc(&vmpi_ida, GFP_KERNEL);
	if (vd->index < 0) {
		err = vd->index;
		goto err_free;
	}
	snprintf(vd->name, sizeof(vd->name), "vmpi%d", vd->index);

	err = vmpi_find_vqs(vd);
	if (err)
		goto err_ida;
	vdev->priv = vd;

	/* rx_work fills the rx ring; it is the only user of rxvq from now on. */
	virtio_device_ready(vdev);
	queue_delayed_work(system_wq, &vd->rx_work, 0);

	vd->misc.minor = MISC_DYNAMIC_MINOR;
	vd->misc.name = vd->name;
	vd->misc.fops = &vmpi_fops;
	vd->misc.parent = &vdev->dev;
	vd->misc.mode = 0600;
	err = misc_register(&vd->misc);
	if (err)
		goto err_reset;

	dev_info(&vdev->dev, "%s: VMPI device, vmpi_id %u, max SDU %u, %s descriptors, %s rx, %s tx\n",
		 vd->name, vd->vmpi_id, vd->max_sdu, vd->tx_slots == 1 ? "indirect" : "direct",
		 vd->packed ? "packed" : "one frame per buffer",
		 vd->tx_packed ? "packed" : "one frame per buffer");
	return 0;

err_reset:
	WRITE_ONCE(vd->removed, true);
	virtio_reset_device(vdev);
	cancel_delayed_work_sync(&vd->rx_work);
	cancel_delayed_work_sync(&vd->reset_work);	/* rx_work may have queued it */
	if (vd->unpack)
		vmpi_buf_free(vd->unpack);
	while ((buf = virtqueue_detach_unused_buf(vd->rxvq)))
		vmpi_buf_free(buf);
	vmpi_buf_free_list(&vd->rx_pool);
	vdev->config->del_vqs(vdev);
err_ida:
	ida_free(&vmpi_ida, vd->index);
err_free:
	vdev->priv = NULL;
	kfree(vd);
	return err;
}

static void vmpi_remove(struct virtio_device *vdev)
{
	struct vmpi_dev *vd = vdev->priv;
	struct vmpi_buf *buf;
	struct vmpi_file *f;
	struct vmpi_rxent e;
	LIST_HEAD(dead);
	int bkt;

	/* No new opens; open files keep their reference on vd. */
	misc_deregister(&vd->misc);

	spin_lock(&vd->lock);
	spin_lock_irq(&vd->tx_lock);
	vd->removed = true;
	spin_unlock_irq(&vd->tx_lock);
	hash_for_each(vd->chans, bkt, f, hnode) {
		while (f->rx_count) {
			vmpi_rx_pop_locked(f, &e);
			vmpi_rx_put_locked(e.buf, &dead);
		}
		wake_up_interruptible_poll(&f->rq, EPOLLIN | EPOLLERR | EPOLLHUP);
	}
	list_splice_init(&vd->rx_pool, &dead);
	vd->rx_pool_len = 0;
	spin_unlock(&vd->lock);
	wake_up_interruptible_all(&vd->tx_wait);

	/* A reset in progress finishes first; none starts after removed is set. */
	cancel_delayed_work_sync(&vd->reset_work);
	/* Quiesce the device, then nobody but us touches the queues. */
	virtio_reset_device(vdev);
	cancel_delayed_work_sync(&vd->rx_work);
	cancel_work_sync(&vd->config_work);
	cancel_delayed_work_sync(&vd->reset_work);
	/* Readers may still hold references on these buffers: theirs free them (removed). */
	spin_lock(&vd->lock);
	if (vd->park.buf)
		vmpi_rx_put_locked(vd->park.buf, &dead);
	vd->park.buf = NULL;
	if (vd->unpack)
		vmpi_rx_put_locked(vd->unpack, &dead);
	vd->unpack = NULL;
	spin_unlock(&vd->lock);
	if (vd->rxvq) {		/* NULL after a failed reset */
		while ((buf = virtqueue_detach_unused_buf(vd->rxvq)))
			vmpi_buf_free(buf);
		while ((buf = virtqueue_detach_unused_buf(vd->txvq)))
			vmpi_buf_free(buf);
		vdev->config->del_vqs(vdev);
	}
	vmpi_buf_free_list(&dead);

	dev_info(&vdev->dev, "%s: removed\n", vd->name);
	ida_free(&vmpi_ida, vd->index);
	vdev->priv = NULL;
	vmpi_dev_put(vd);
}

static unsigned int vmpi_features[] = { VMPI_F_RX_PACKED, VMPI_F_TX_PACKED };

/* Before the features are final: rx_packed=0 / tx_packed=0 make this driver an old one. */
static int vmpi_validate(struct virtio_device *vdev)
{
	if (!rx_packed)
		__virtio_clear_bit(vdev, VMPI_F_RX_PACKED);
	if (!tx_packed)
		__virtio_clear_bit(vdev, VMPI_F_TX_PACKED);
	return 0;
}

static const struct virtio_device_id vmpi_id_table[] = {
	{ VIRTIO_ID_VMPI_CARRIER, VIRTIO_DEV_ANY_ID },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, vmpi_id_table);

static struct virtio_driver vmpi_driver = {
	.driver.name	= KBUILD_MODNAME,
	.driver.owner	= THIS_MODULE,
	.driver.dev_groups = vmpi_groups,
	.id_table	= vmpi_id_table,
	.feature_table	= vmpi_features,
	.feature_table_size = ARRAY_SIZE(vmpi_features),
	.validate	= vmpi_validate,
	.probe		= vmpi_probe,
	.remove		= vmpi_remove,
	.config_changed	= vmpi_config_changed,
#ifdef CONFIG_PM_SLEEP
	.freeze		= vmpi_freeze,
	.restore	= vmpi_restore,
#endif
};

static int __init vmpi_init(void)
{
	if (copybreak > PAGE_SIZE - VMPI_HDR_LEN)
		copybreak = PAGE_SIZE - VMPI_HDR_LEN;
	if (!rx_queue_len)
		rx_queue_len = 1;
	return register_virtio_driver(&vmpi_driver);
}

static void __exit vmpi_exit(void)
{
	unregister_virtio_driver(&vmpi_driver);
	ida_destroy(&vmpi_ida);
}

module_init(vmpi_init);
module_exit(vmpi_exit);

MODULE_DESCRIPTION("VMPI: virtio message-passing device for the RINA shim DIF for hypervisors");
MODULE_LICENSE("GPL");
