package fleet

import (
	"os/exec"
	"testing"

	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// TestDeploymentConfigsValidate runs `otelcol-flowattr validate` on every
// deployment shape in testdata/fleet with the variables its header lists, so
// that a shape no end-to-end test starts (agent.yaml) still loads in the
// built binary.
func TestDeploymentConfigsValidate(t *testing.T) {
	bin := collectortest.Binary(t)
	tls := map[string]string{"FLOWATTR_TLS_CA": "/etc/flowattr/ca.pem", "FLOWATTR_TLS_CERT": "/etc/flowattr/cert.pem", "FLOWATTR_TLS_KEY": "/etc/flowattr/key.pem"}
	for name, env := range map[string]map[string]string{
		"node.yaml": {
			"FLOWATTR_NODE_NAME": "node-a", "FLOWATTR_CLAIM_ENDPOINT": "0.0.0.0:4317",
			"FLOWATTR_PEER_1": "node-a.example.internal:4317", "FLOWATTR_PEER_2": "node-b.example.internal:4317",
			"FLOWATTR_FLOWS_ENDPOINT": "backend.example.internal:4317",
		},
		"agent.yaml": {
			"FLOWATTR_NODE_NAME": "node-a", "FLOWATTR_GATEWAYS": "dns:///flowattr-gateways.example.internal:4317",
		},
		"gateway.yaml": {
			"FLOWATTR_GATEWAY_NAME": "gateway-1", "FLOWATTR_AGENT_ENDPOINT": "0.0.0.0:4317",
			"FLOWATTR_KAFKA_BROKERS": "kafka-0.example.internal:9092", "FLOWATTR_FLOWS_ENDPOINT": "backend.example.internal:4317",
		},
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bin, "validate", "--config="+configPath(t, name))
			cmd.Env = []string{"PATH=/usr/bin:/bin"}
			for k, v := range tls {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			for k, v := range env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s does not validate: %v\n%s", name, err, out)
			}
		})
	}
}
