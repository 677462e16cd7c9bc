#!/usr/bin/env bash
# Builds the etcd and kube-apiserver binaries that envtest runs (the tests of
# test/kube and internal/localowner/kube) from their Go modules, into DIR
# (the first argument), so that a machine with only the Go module proxy can
# run a real API server. Both builds take long (kube-apiserver about 20
# minutes on 2 cores): the Makefile keeps DIR outside the repository, keyed
# by version, and calls this only when a binary is missing.
set -euo pipefail

dir=${1:?usage: envtest-assets.sh DIR}
: "${ETCD_VERSION:?}" "${KUBE_VERSION:?}"
go=${GO:-go}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dir"
export GOFLAGS=-mod=mod GOWORK=off

if [ ! -x "$dir/etcd" ]; then
	mkdir "$work/etcd"
	(
		cd "$work/etcd"
		$go mod init envtest-etcd >/dev/null 2>&1
		$go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
		$go build -o "$work/etcd.bin" go.etcd.io/etcd/server/v3
	)
	mv "$work/etcd.bin" "$dir/etcd"
fi

if [ ! -x "$dir/kube-apiserver" ]; then
	mkdir "$work/apiserver"
	(
		cd "$work/apiserver"
		$go mod init envtest-apiserver >/dev/null 2>&1
		# k8s.io/kubernetes replaces its staging modules with local paths, which a
		# dependent module cannot follow: point each at its published version.
		staging=$($go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
			sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
		sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$staging" |
			while read -r mod; do
				echo "replace $mod => $mod v0${KUBE_VERSION#v1}" >>go.mod
			done
		$go get "k8s.io/kubernetes@$KUBE_VERSION"
		$go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION"
		$go build -o "$work/kube-apiserver.bin" k8s.io/kubernetes/cmd/kube-apiserver
	)
	mv "$work/kube-apiserver.bin" "$dir/kube-apiserver"
fi
