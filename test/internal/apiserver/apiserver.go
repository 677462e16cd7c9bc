// Package apiserver runs a real kube-apiserver and etcd for tests (envtest),
// from the binaries that `make envtest-assets` builds.
package apiserver // import "github.com/flowattr/flowattr/test/internal/apiserver"

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Assets is the directory of the etcd and kube-apiserver binaries:
// KUBEBUILDER_ASSETS when set (`make test` sets it), else where
// `make envtest-assets` builds them (keep in step with the Makefile's
// KUBE_VERSION and ETCD_VERSION).
func Assets() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "flowattr", "envtest", "v1.37.2-etcd-v3.7.3")
}

// Missing says which binaries are not in Assets, one phrase each; empty
// when both are there.
func Missing() []string {
	var missing []string
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(Assets(), bin)); err != nil {
			missing = append(missing, fmt.Sprintf("%s in %s (run `make envtest-assets`; make test does)", bin, Assets()))
		}
	}
	return missing
}

// Start starts an API server and its etcd, stopped when t ends. It skips t,
// loudly, when the binaries are missing.
func Start(t testing.TB) (*envtest.Environment, *rest.Config) {
	t.Helper()
	if missing := Missing(); len(missing) > 0 {
		t.Skipf("SKIPPED, NOT RUN: this test needs %s", strings.Join(missing, ", "))
	}
	env := &envtest.Environment{BinaryAssetsDirectory: Assets()}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the API server: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	return env, cfg
}
