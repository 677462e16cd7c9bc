package kube // import "github.com/flowattr/flowattr/internal/localowner/kube"

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// NewClient returns a client of the API server: from the kubeconfig file at
// path, or with the pod's service account (in-cluster) when path is empty.
func NewClient(path, userAgent string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if path == "" {
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("in-cluster credentials (set ownership.kubernetes.kubeconfig outside a pod): %w", err)
		}
	} else if cfg, err = clientcmd.BuildConfigFromFlags("", path); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	cfg.UserAgent = userAgent
	// Protobuf is smaller and faster to decode than JSON for core objects.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return kubernetes.NewForConfig(cfg)
}
