//go:build !linux

package kube // import "github.com/flowattr/flowattr/internal/localowner/kube"

import "k8s.io/apimachinery/pkg/types"

// scanCgroups finds nothing: cgroups are Linux's.
func scanCgroups(string, func(string) (types.UID, bool)) map[uint64]types.UID { return nil }

func cgroup2Mount() string { return "" }
