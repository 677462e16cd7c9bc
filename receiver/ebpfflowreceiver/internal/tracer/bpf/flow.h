// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Records shared between the BPF programs and user space. Layouts are fixed
// with explicit padding: decode.go reads flow_event byte by byte.
#pragma once

enum counter {
	COUNTER_LOST_EVENTS = 0,
	COUNTER_BIRTH_MAP_FULL = 1,
	COUNTER_LISTENER_MAP_FULL = 2,
	COUNTER_MAX = 3,
};

enum kind {
	KIND_CLOSED = 1,
	KIND_FAILED = 2,
	KIND_ACTIVE = 3,
	KIND_CONNECTED = 4, // a client connection to a nat_prefixes peer, once established
};

enum role {
	ROLE_UNKNOWN = 0,
	ROLE_CLIENT = 1,
	ROLE_SERVER = 2,
};

// birth.flags
#define BIRTH_START_UNKNOWN 0x1 // seeded by the iterator: predates the tracer
#define BIRTH_FIN_SENT 0x2	// went through FIN_WAIT1 or LAST_ACK

// flow_event.flags
#define EVENT_START_UNKNOWN 0x1

struct tuple {
	__u8 saddr[16]; // local; IPv4 as ::ffff:a.b.c.d
	__u8 daddr[16]; // peer
	__u16 sport;	// local, host order
	__u16 dport;	// peer, host order
	__u16 family;	// AF_INET or AF_INET6 (of the socket)
	__u16 pad;
};

struct birth {
	struct tuple tuple;
	__u64 start_ns; // bpf_ktime_get_boot_ns
	__u64 cookie;
	__u64 cgroup_id;
	__u32 pid;
	__u32 netns;
	__u8 role;
	__u8 flags;
	__u8 pad[6];
	char comm[16];
};

// 136 bytes; offsets are asserted by decode_test.go.
struct flow_event {
	struct tuple tuple;	// 0
	__u64 cookie;		// 40
	__u64 start_ns;		// 48
	__u64 end_ns;		// 56
	__u64 bytes_sent;	// 64
	__u64 bytes_received;	// 72
	__u64 cgroup_id;	// 80
	__u32 segs_out;		// 88
	__u32 segs_in;		// 92
	__u32 total_retrans;	// 96
	__u32 srtt_us;		// 100
	__u32 pid;		// 104
	__u32 netns;		// 108
	__s32 err;		// 112
	__u8 kind;		// 116
	__u8 role;		// 117
	__u8 flags;		// 118
	__u8 pad;		// 119
	char comm[16];		// 120
};

// Key of nat_prefixes: prefixlen counts bits of addr, IPv4 as
// ::ffff:a.b.c.d (a /24 of IPv4 is 96 + 24).
struct nat_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct listen_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};
