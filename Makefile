# flowattr: build, run, test and benchmark the otelcol-flowattr collector.
#
# Tools (ocb, mdatagen, bpf2go, benchstat, golangci-lint) are pinned in
# tools/go.mod and run with `go tool -modfile=tools/go.mod`, so nothing is
# installed globally.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO ?= go
GOTOOL := $(GO) tool -modfile=$(CURDIR)/tools/go.mod

DIST_NAME := otelcol-flowattr
DIST_DIR := _build/$(DIST_NAME)
BINARY := bin/$(DIST_NAME)
CONFIG ?= config/default.yaml

TEST_TIMEOUT ?= 20m
BENCH_COUNT ?= 6
BENCH_PKGS ?= ./...
BENCH_OUT ?= bench.out

# Every Go file outside the generated distribution, for gofmt and for deciding
# whether the binary is stale.
GO_FILES := $(shell find . -name '*.go' -not -path './_build/*' -not -path './.git/*')
# The binary is built from the non-test sources of the root module (not the
# test support under internal/testutil), the eBPF objects that bpf2go
# embeds and the flowmap exporter's embedded web page.
BUILD_INPUTS := builder-config.yaml go.mod go.sum $(filter-out %_test.go ./test/% ./internal/testutil/%,$(GO_FILES)) \
	$(shell find . -name '*_bpfel.o' -not -path './_build/*' -not -path './.git/*') \
	$(shell find exporter -path '*/web/*' -type f)

# Commands run as root in CI; elsewhere apt-get goes through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# apt_install_missing installs the Debian packages collected in $$missing, if
# any, refreshing the package lists first.
define apt_install_missing
if [ -n "$$missing" ]; then \
	echo "installing Debian packages:$$missing"; \
	$(SUDO) apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
fi
endef

.PHONY: build run test bench bench-e2e evaluate generate lint fmt cross-build test-deps generate-deps envtest-assets helm-lint clean

## build: build bin/otelcol-flowattr with ocb from builder-config.yaml.
build: $(BINARY)

$(BINARY): $(BUILD_INPUTS)
	@mkdir -p _build bin
	$(GOTOOL) builder --config=builder-config.yaml
	install -m 0755 $(DIST_DIR)/$(DIST_NAME) $@

## run: build and run the collector on config/default.yaml (needs root for eBPF).
run: $(BINARY)
	$(BINARY) --config=$(CONFIG)

# The real kube-apiserver and etcd that the Kubernetes tests run (envtest),
# built from their Go modules: kube-apiserver takes about 20 minutes on 2
# cores, so the binaries are cached outside the repository, keyed by
# version, and built only when missing.
KUBE_VERSION ?= v1.37.2
ETCD_VERSION ?= v3.7.3
ENVTEST_ASSETS ?= $(HOME)/.cache/flowattr/envtest/$(KUBE_VERSION)-etcd-$(ETCD_VERSION)

## envtest-assets: build etcd and kube-apiserver for the Kubernetes tests into $(ENVTEST_ASSETS).
envtest-assets: $(ENVTEST_ASSETS)/kube-apiserver $(ENVTEST_ASSETS)/etcd

$(ENVTEST_ASSETS)/kube-apiserver $(ENVTEST_ASSETS)/etcd &:
	KUBE_VERSION=$(KUBE_VERSION) ETCD_VERSION=$(ETCD_VERSION) GO=$(GO) tools/envtest-assets.sh $(ENVTEST_ASSETS)

HELM_CHART := deploy/helm/flowattr

## helm-lint: helm lint and helm template the chart in $(HELM_CHART) (test/helm checks what it renders).
# Also builds the pinned helm once, so that test/helm's runs of it start at once.
helm-lint:
	$(GOTOOL) helm lint --strict $(HELM_CHART)
	$(GOTOOL) helm template flowattr $(HELM_CHART) >/dev/null

## test: go test -race over the module; the e2e tests run the built binary.
# One test binary at a time (-p 1): the eBPF tests count every close of a
# connection burst, and a flood test of the collector running beside them
# makes the kernel skip nested runs of the tracing programs (counted as
# recursion misses), which those tests rightly refuse.
test: test-deps envtest-assets helm-lint $(BINARY)
	FLOWATTR_COLLECTOR_BIN=$(CURDIR)/$(BINARY) KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) $(GO) test -race -p 1 -timeout $(TEST_TIMEOUT) ./...

## bench: run the benchmarks of $(BENCH_PKGS) $(BENCH_COUNT) times into $(BENCH_OUT) (benchstat input).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) $(BENCH_PKGS) | tee $(BENCH_OUT)
	@echo "wrote $(BENCH_OUT); compare runs with: $(GOTOOL) benchstat old.out $(BENCH_OUT)"

PERF_COUNT ?= 3
PERF_OUT ?= bench-e2e.out

## bench-e2e: end-to-end throughput and memory of the built collector against
## the stock pipeline, holding fresh flows, and the ebpfflow receiver's cost
## on a host making short connections (root) (test/perf), $(PERF_COUNT) runs
## into $(PERF_OUT).
bench-e2e: $(BINARY)
	FLOWATTR_COLLECTOR_BIN=$(CURDIR)/$(BINARY) $(GO) test -run '^$$' -bench . -count $(PERF_COUNT) -timeout 90m ./test/perf/ | tee $(PERF_OUT)
	@echo "wrote $(PERF_OUT); summarise with: $(GOTOOL) benchstat $(PERF_OUT)"

## evaluate: score the real ownership processor and an event-based baseline on a
## seeded fleet simulation; fails if a goal is missed (docs/evaluation.md).
evaluate:
	$(GO) run ./cmd/flowattr-evaluate -check

## generate: regenerate mdatagen code for every metadata.yaml and bpf2go objects.
generate: generate-deps
	@for md in $$(find . -name metadata.yaml -not -path './_build/*' -not -path './.git/*'); do \
		echo "mdatagen $$md"; \
		(cd "$$(dirname "$$md")" && $(GOTOOL) mdatagen metadata.yaml); \
	done
	$(GO) generate ./...

## lint: fail on unformatted files, then go vet, then golangci-lint (.golangci.yml).
lint:
	@unformatted="$$(gofmt -l $(GO_FILES))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GOTOOL) golangci-lint run ./...

## fmt: rewrite the Go files with golangci-lint's formatters (gofumpt, goimports).
fmt:
	$(GOTOOL) golangci-lint fmt

# Systems other than Linux that the module must build for: the eBPF tracer
# is Linux-only, everything else is portable, and on these systems the
# ebpfflow receiver refuses to start saying it works on Linux only.
CROSS_GOOS ?= darwin windows

## cross-build: go build and go vet the module (tests included) for each of $(CROSS_GOOS).
cross-build:
	@for goos in $(CROSS_GOOS); do \
		echo "GOOS=$$goos $(GO) build ./... && GOOS=$$goos $(GO) vet ./..."; \
		GOOS=$$goos $(GO) build ./...; \
		GOOS=$$goos $(GO) vet ./...; \
	done

# iproute2 for tests that build hosts in network namespaces; nftables for
# the address translation test's DNAT rule, setpriv (util-linux) for running
# its collector without CAP_NET_ADMIN; gcc for -race; chromium for the
# flowmap page test (headless).
test-deps:
	@missing=""; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v nft >/dev/null || missing="$$missing nftables"; \
	command -v setpriv >/dev/null || missing="$$missing util-linux"; \
	command -v gcc >/dev/null || missing="$$missing gcc libc6-dev"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	$(apt_install_missing)

# clang/llvm compile the eBPF C code, bpftool dumps vmlinux.h, libbpf-dev has
# the bpf_helpers.h family.
generate-deps:
	@missing=""; \
	command -v clang >/dev/null || missing="$$missing clang"; \
	command -v llvm-strip >/dev/null || missing="$$missing llvm"; \
	command -v bpftool >/dev/null || missing="$$missing bpftool"; \
	[ -f /usr/include/bpf/bpf_helpers.h ] || missing="$$missing libbpf-dev"; \
	$(apt_install_missing)

## clean: remove the built binary and the generated distribution.
clean:
	rm -rf bin _build
