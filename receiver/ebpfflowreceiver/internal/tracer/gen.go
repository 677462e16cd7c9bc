package tracer

//go:generate go tool -modfile=../../../../tools/go.mod bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type flow_event -type birth flow bpf/flow.c -- -I./bpf
