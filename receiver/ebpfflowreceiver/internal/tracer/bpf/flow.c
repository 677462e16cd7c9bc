// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// TCP flow tracer: one record per connection at close, interim records from
// a socket iterator. Built with bpf2go for amd64 and arm64 against the
// committed vmlinux.h (dumped from an amd64 kernel's BTF). That header is
// only used for struct sock / tcp_sock / tracepoint context layouts, and
// every field access goes through CO-RE relocations (BPF_CORE_READ), so the
// loader fixes the offsets against the running kernel's BTF on either
// architecture; nothing here touches arch-specific types such as pt_regs.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "flow.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

// Sized by user space (Options.MaxConnections) before load.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); // struct sock pointer
	__type(value, struct birth);
} births SEC(".maps");

// Sized by user space (Options.RingBufferSize) before load.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

// Loss counters, per CPU so the hot path never contends.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// Listening (netns, port) pairs seen by the iterator in the current pass; it
// visits listeners before established sockets, so a socket that predates the
// tracer and shares its local port with a listener is taken as the server.
// Pairs beyond max_entries are counted; the sockets of their ports that
// predate the tracer are then taken as clients.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listen_key);
	__type(value, __u8);
} listeners SEC(".maps");

// Peer prefixes whose client connections are reported once more when
// established (KIND_CONNECTED), so that user space can read the kernel's
// address translation of the connection while it certainly exists. Filled
// by user space; empty, it costs one failed lookup per established client.
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nat_key);
	__type(value, __u8);
} nat_prefixes SEC(".maps");

// Scratch space for building a record in the iterator (the stack is too
// small for two structs plus the sequence-file writes).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_event);
} scratch SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);
	if (v)
		*v += 1;
}

// Reads the 4-tuple. Ports: skc_num is host order, skc_dport network order;
// both are stored in host order. Addresses stay 16 bytes, IPv4 as
// ::ffff:a.b.c.d, and a dual-stack IPv6 socket already holds that form.
static __always_inline void read_tuple(struct sock *sk, struct tuple *t)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	t->family = family;
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (t->sport == 0) // unbound from its port on the way to TCP_CLOSE
		t->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		__be32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		__builtin_memset(t->saddr, 0, 16);
		__builtin_memset(t->daddr, 0, 16);
		t->saddr[10] = 0xff;
		t->saddr[11] = 0xff;
		t->daddr[10] = 0xff;
		t->daddr[11] = 0xff;
		__builtin_memcpy(&t->saddr[12], &s, 4);
		__builtin_memcpy(&t->daddr[12], &d, 4);
	} else {
		BPF_CORE_READ_INTO(&t->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&t->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

static __always_inline __u32 netns_inode(struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

// Takes the current task as the socket's process. Only called where the
// kernel runs in the context of the process that owns the socket (connect,
// send or receive), never from softirq.
static __always_inline void take_process(struct birth *b)
{
	b->pid = bpf_get_current_pid_tgid() >> 32;
	b->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&b->comm, sizeof(b->comm));
}

// Fills the counters of e from the socket. Payload bytes exclude the
// sequence numbers of SYN and FIN: bytes_acked counts the client's own SYN
// (acknowledged by the SYN-ACK; a server child starts past its SYN-ACK) and
// our FIN once acknowledged (FIN sent and snd_una reached write_seq, which
// includes the FIN); bytes_received counts the peer's FIN once received
// (tcp_fin sets SOCK_DONE; a reset does not).
static __always_inline void read_counters(struct sock *sk, __u8 role, __u8 flags, struct flow_event *e)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u64 acked = BPF_CORE_READ(tp, bytes_acked);
	__u64 received = BPF_CORE_READ(tp, bytes_received);
	__u64 sent_overhead = 0;

	if (role == ROLE_CLIENT)
		sent_overhead++;
	if ((flags & BIRTH_FIN_SENT) && BPF_CORE_READ(tp, snd_una) == BPF_CORE_READ(tp, write_seq))
		sent_overhead++;
	e->bytes_sent = acked > sent_overhead ? acked - sent_overhead : 0;

	if ((BPF_CORE_READ(sk, __sk_common.skc_flags) & (1UL << SOCK_DONE)) && received > 0)
		received--;
	e->bytes_received = received;

	e->segs_out = BPF_CORE_READ(tp, segs_out);
	e->segs_in = BPF_CORE_READ(tp, segs_in);
	e->total_retrans = BPF_CORE_READ(tp, total_retrans);
	e->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
}

static __always_inline void copy_birth(const struct birth *b, struct flow_event *e)
{
	e->tuple = b->tuple;
	e->cookie = b->cookie;
	e->start_ns = b->start_ns;
	e->cgroup_id = b->cgroup_id;
	e->pid = b->pid;
	e->netns = b->netns;
	e->role = b->role;
	e->flags = b->flags & BIRTH_START_UNKNOWN ? EVENT_START_UNKNOWN : 0;
	__builtin_memcpy(e->comm, b->comm, sizeof(e->comm));
}

// Waking the reader for every record costs a context switch per
// connection. Wake it only once a quarter of the ring is filled; the reader
// polls on a short timer for the rest (Read's readInterval).
static __always_inline __u64 wakeup_flags(void)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);

	return avail >= size / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void on_birth(struct sock *sk, __u64 key, __u64 cookie, __u8 role, bool process_context)
{
	struct birth b = {};

	b.start_ns = bpf_ktime_get_boot_ns();
	b.cookie = cookie;
	b.role = role;
	b.netns = netns_inode(sk);
	read_tuple(sk, &b.tuple);
	if (process_context)
		take_process(&b);
	if (bpf_map_update_elem(&births, &key, &b, BPF_ANY) != 0)
		count(COUNTER_BIRTH_MAP_FULL);
}

static __always_inline void on_close(struct sock *sk, __u64 key, __u64 cookie, int oldstate)
{
	struct birth *b = bpf_map_lookup_elem(&births, &key);
	struct flow_event *e;

	if (oldstate == TCP_SYN_RECV) {
		// A handshake that never completed on the server side; accept()
		// never saw it, so it is no flow of any process.
		if (b)
			bpf_map_delete_elem(&births, &key);
		return;
	}

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_LOST_EVENTS);
		if (b)
			bpf_map_delete_elem(&births, &key);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));

	e->end_ns = bpf_ktime_get_boot_ns();
	if (b) {
		copy_birth(b, e);
		// The local port may already be gone at close; keep the tuple
		// from birth unless it was incomplete.
		if (e->tuple.sport == 0 || e->tuple.dport == 0)
			read_tuple(sk, &e->tuple);
	} else {
		// Neither born nor seeded while we watched (the map was full, or
		// the socket predates the tracer and no iterator pass ran yet):
		// first seen now.
		read_tuple(sk, &e->tuple);
		e->cookie = cookie;
		e->start_ns = e->end_ns;
		e->netns = netns_inode(sk);
		e->flags = EVENT_START_UNKNOWN;
		e->role = oldstate == TCP_SYN_SENT ? ROLE_CLIENT : ROLE_UNKNOWN;
	}

	if (oldstate == TCP_SYN_SENT) {
		e->kind = KIND_FAILED;
	} else {
		e->kind = KIND_CLOSED;
		read_counters(sk, e->role, b ? b->flags : 0, e);
	}
	e->err = BPF_CORE_READ(sk, sk_err);
	if (e->err == 0)
		e->err = BPF_CORE_READ(sk, sk_err_soft);

	bpf_ringbuf_submit(e, wakeup_flags());
	if (b)
		bpf_map_delete_elem(&births, &key);
}

// Reports an established client connection whose peer is in nat_prefixes.
static __always_inline void on_connected(const struct birth *b)
{
	struct nat_key k = {.prefixlen = 128};
	struct flow_event *e;

	__builtin_memcpy(k.addr, b->tuple.daddr, 16);
	if (!bpf_map_lookup_elem(&nat_prefixes, &k))
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_LOST_EVENTS);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	copy_birth(b, e);
	e->kind = KIND_CONNECTED;
	e->end_ns = bpf_ktime_get_boot_ns();
	bpf_ringbuf_submit(e, wakeup_flags());
}

static __always_inline void handle_set_state(struct sock *sk, __u64 cookie, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;
	struct birth *b;

	switch (newstate) {
	case TCP_SYN_SENT:
		// connect(): process context.
		on_birth(sk, key, cookie, ROLE_CLIENT, true);
		return;
	case TCP_SYN_RECV:
		// The child socket cloned from a listener, in softirq: the
		// process is taken at its first send or receive.
		on_birth(sk, key, cookie, ROLE_SERVER, false);
		return;
	case TCP_CLOSE:
		if (oldstate == TCP_LISTEN || oldstate == TCP_CLOSE)
			return;
		on_close(sk, key, cookie, oldstate);
		return;
	}

	b = bpf_map_lookup_elem(&births, &key);
	if (!b)
		return;
	if (newstate == TCP_ESTABLISHED) {
		// The client's local port is assigned after SYN_SENT, the server
		// child's addresses after SYN_RECV: both are final now.
		read_tuple(sk, &b->tuple);
		if (b->role == ROLE_CLIENT && oldstate == TCP_SYN_SENT)
			on_connected(b);
	} else if (newstate == TCP_FIN_WAIT1 || newstate == TCP_LAST_ACK) {
		b->flags |= BIRTH_FIN_SENT;
	}
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state_btf, struct sock *sk, int oldstate, int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	handle_set_state(sk, bpf_get_socket_cookie(sk), oldstate, newstate);
	return 0;
}

// Fallback for kernels where tp_btf does not load. The socket cookie helper
// is not available to classic tracepoints: use the cookie if some other
// user already generated it, else a tracer-assigned ID with the top bit set.
SEC("tracepoint/sock/inet_sock_set_state")
int inet_sock_set_state_tp(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	__u64 cookie = 0;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	if (ctx->newstate == TCP_SYN_SENT || ctx->newstate == TCP_SYN_RECV) {
		cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
		if (cookie == 0)
			cookie = (1ULL << 63) | (bpf_ktime_get_ns() << 8) | (bpf_get_smp_processor_id() & 0xff);
	}
	handle_set_state(sk, cookie, ctx->oldstate, ctx->newstate);
	return 0;
}

// A server socket is born in softirq, so its process is taken from the first
// send or receive on it, which runs in the context of the process using it
// (normally the one that accepted it). fexit/inet_csk_accept would be the
// precise hook but fexit programs are refused on some kernels (EPERM on the
// one this was developed on); these BTF tracepoints load wherever tp_btf
// does (kernel >= 6.5). Cost: one hash lookup per send/recv call on TCP.
static __always_inline void take_server_process(struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct birth *b;

	if (sk->sk_protocol != IPPROTO_TCP)
		return;
	b = bpf_map_lookup_elem(&births, &key);
	if (b && b->role == ROLE_SERVER && b->pid == 0)
		take_process(b);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send_length, struct sock *sk, int ret, int flags)
{
	take_server_process(sk);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv_length, struct sock *sk, int ret, int flags)
{
	take_server_process(sk);
	return 0;
}

static __always_inline bool is_open_state(int state)
{
	switch (state) {
	case TCP_ESTABLISHED:
	case TCP_FIN_WAIT1:
	case TCP_FIN_WAIT2:
	case TCP_CLOSE_WAIT:
	case TCP_LAST_ACK:
	case TCP_CLOSING:
		return true;
	}
	return false;
}

// One pass over the TCP socket tables: writes a flow_event of kind active
// for every open connection, seeding a birth entry for those born before
// the tracer so that their close is reported too.
SEC("iter/tcp")
int active_connections(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	struct flow_event *e;
	struct tcp_sock *tp;
	struct sock *sk;
	struct birth *b;
	__u32 zero = 0;
	__u64 key;
	int state;

	if (!skc)
		return 0;
	if (skc->skc_family != AF_INET && skc->skc_family != AF_INET6)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc); // NULL for request and time-wait socks
	if (!tp)
		return 0;
	sk = (struct sock *)tp;
	state = skc->skc_state;

	if (state == TCP_LISTEN) {
		struct listen_key lk = {
			.netns = netns_inode(sk),
			.port = skc->skc_num,
		};
		__u8 one = 1;

		if (bpf_map_update_elem(&listeners, &lk, &one, BPF_ANY) != 0)
			count(COUNTER_LISTENER_MAP_FULL);
		return 0;
	}
	if (!is_open_state(state))
		return 0;

	key = (__u64)sk;
	b = bpf_map_lookup_elem(&births, &key);
	if (!b) {
		struct birth nb = {};
		struct listen_key lk = {};

		nb.start_ns = bpf_ktime_get_boot_ns();
		nb.cookie = bpf_get_socket_cookie(skc);
		nb.netns = netns_inode(sk);
		nb.flags = BIRTH_START_UNKNOWN;
		if (state == TCP_FIN_WAIT1 || state == TCP_FIN_WAIT2 || state == TCP_CLOSING || state == TCP_LAST_ACK)
			nb.flags |= BIRTH_FIN_SENT;
		read_tuple(sk, &nb.tuple);
		lk.netns = nb.netns;
		lk.port = nb.tuple.sport;
		nb.role = bpf_map_lookup_elem(&listeners, &lk) ? ROLE_SERVER : ROLE_CLIENT;
		// NOEXIST: a birth recorded meanwhile by the tracepoint wins.
		if (bpf_map_update_elem(&births, &key, &nb, BPF_NOEXIST) != 0 &&
		    bpf_map_lookup_elem(&births, &key) == NULL)
			count(COUNTER_BIRTH_MAP_FULL);
		b = bpf_map_lookup_elem(&births, &key);
		if (!b)
			return 0;
	}

	e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	copy_birth(b, e);
	e->kind = KIND_ACTIVE;
	e->end_ns = bpf_ktime_get_boot_ns();
	read_counters(sk, e->role, b->flags, e);
	e->err = BPF_CORE_READ(sk, sk_err_soft);
	bpf_seq_write(seq, e, sizeof(*e));
	return 0;
}
