package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
	"github.com/flowattr/flowattr/test/internal/testca"
)

// identityConfig is a collector whose ownership processor checks
// certificates behind two OTLP receivers with both protocols enabled, as
// collector users habitually do: otlp/mtls requires a client certificate
// from the CA, otlp/tls only encrypts.
const identityConfig = `
extensions:
  health_check:
    endpoint: %[1]s
receivers:
  otlp/mtls:
    protocols:
      grpc:
        endpoint: %[2]s
        tls: &mtls
          cert_file: %[6]s
          key_file: %[7]s
          client_ca_file: %[8]s
      http:
        endpoint: %[3]s
        tls: *mtls
  otlp/tls:
    protocols:
      grpc:
        endpoint: %[4]s
        tls: &tls
          cert_file: %[6]s
          key_file: %[7]s
      http:
        endpoint: %[5]s
        tls: *tls
processors:
  ownership:
    max_wait: 0s
    sender_identity: certificate
exporters:
  otlp_grpc/sink:
    endpoint: %[9]s
    tls:
      insecure: true
service:
  extensions: [health_check]
  telemetry:
    metrics:
      level: detailed
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: %[10]d
  pipelines:
    logs:
      receivers: [otlp/mtls, otlp/tls]
      processors: [ownership]
      exporters: [otlp_grpc/sink]
`

// TestCertificateIdentityFailsClosed sends one claim by each transport, with
// and without a client certificate, to a collector whose ownership
// processor has sender_identity: certificate. Only the claim whose sender
// a verified client certificate names, over OTLP/gRPC, is applied; the
// OTLP/HTTP receiver leaves no certificate in the context, so its claims
// are refused like those without one, counted as unauthenticated_sender,
// and no flow is attributed from them.
func TestCertificateIdentityFailsClosed(t *testing.T) {
	collectortest.Binary(t)
	ca := testca.New(t, "flowattr-test-identity")
	server := ca.Issue(t, "collector", net.ParseIP("127.0.0.1"))
	agent := ca.Issue(t, "agent-a")
	sink := collectortest.StartSink(t)
	port := func() string { return fmt.Sprintf("127.0.0.1:%d", collectortest.FreePort(t)) }
	health, grpcMTLS, httpMTLS, grpcTLS, httpTLS := port(), port(), port(), port(), port()
	metricsPort := collectortest.FreePort(t)
	config := filepath.Join(t.TempDir(), "identity.yaml")
	must(t, os.WriteFile(config, fmt.Appendf(nil, identityConfig, health, grpcMTLS, httpMTLS, grpcTLS, httpTLS,
		server.CertFile, server.KeyFile, ca.File, sink.Addr, metricsPort), 0o600), "writing config")
	col := collectortest.Start(t, collectortest.Options{Configs: []string{config}})
	col.WaitReady(t, health)

	withCert, noCert := ca.ClientTLS(agent), ca.ClientTLS(testca.Leaf{})
	https := func(tlsCfg *tls.Config) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	}
	now := time.Now()
	cases := []struct {
		name     string
		addr     netip.Addr
		send     func(plog.Logs) error
		accepted bool
	}{
		{"grpc-with-certificate", netip.MustParseAddr("10.1.0.1"), dialAgent(t, grpcMTLS, withCert).sendFunc(), true},
		{"grpc-without-certificate", netip.MustParseAddr("10.1.0.2"), dialAgent(t, grpcTLS, noCert).sendFunc(), false},
		{"http-with-certificate", netip.MustParseAddr("10.1.0.3"), httpSender(https(withCert), httpMTLS), false},
		{"http-without-certificate", netip.MustParseAddr("10.1.0.4"), httpSender(https(noCert), httpTLS), false},
	}
	var flowsOut []syntheticFlow
	for _, c := range cases {
		// Each claim names the sender that the agent's certificate names.
		must(t, c.send(claims(flowschema.Claim{Address: c.addr, Owner: owners.Owner{ID: c.name}, Start: now.Add(-20 * time.Second), End: now, Sender: "agent-a"})), "%s: sending the claim", c.name)
		flowsOut = append(flowsOut, syntheticFlow{name: c.name, local: "10.2.0.9", localOwner: "frontend", peer: c.addr.String(), start: now.Add(-10 * time.Second)})
	}
	// The flows come after every claim, over the authenticated connection.
	must(t, dialAgent(t, grpcMTLS, withCert).send(context.Background(), flows(flowsOut...)), "sending flows")

	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.name
	}
	got := waitForCases(t, sink, 30*time.Second, names...)
	for _, c := range cases {
		r := got[c.name]
		st, id := r.Str(flowschema.AttrPeerAttributionStatus), r.Str(flowschema.PrefixPeerOwner+flowschema.OwnerIDSuffix)
		switch {
		case c.accepted && (st != "attributed" || id != c.name):
			t.Errorf("%s: the flow is %q to %q (reason %q), want attributed to %q: the claim was verified", c.name, st, id, r.Str(flowschema.AttrPeerAttributionReason), c.name)
		case !c.accepted && (st != "unattributed" || id != ""):
			t.Errorf("%s: the flow is %q to %q, want unattributed: no certificate verified the claim's sender", c.name, st, id)
		}
	}

	m := col.Metrics(t, fmt.Sprintf("127.0.0.1:%d", metricsPort))
	if n := collectortest.MetricSum(m, "otelcol_processor_ownership_claims_applied"); n != 1 {
		t.Errorf("%v claims applied, want 1 (OTLP/gRPC with a client certificate)", n)
	}
	if n := collectortest.MetricSum(m, "otelcol_processor_ownership_claims_rejected", "reason", "unauthenticated_sender"); n != 3 {
		t.Errorf("%v claims rejected as unauthenticated_sender, want 3 (OTLP/HTTP with and without a client certificate, OTLP/gRPC without)", n)
	}
	// The flows' local side (10.2.0.9, frontend) came over the
	// authenticated connection, and claimed for agent-a.
	if n := collectortest.MetricSum(m, "otelcol_processor_ownership_local_claims_applied"); n != float64(len(cases)) {
		t.Errorf("%v local claims applied, want %d", n, len(cases))
	}
}

func (a *agentClient) sendFunc() func(plog.Logs) error {
	return func(ld plog.Logs) error { return a.send(context.Background(), ld) }
}

// httpSender posts logs to the OTLP/HTTP receiver at addr, as an OTLP/HTTP
// exporter does.
func httpSender(client *http.Client, addr string) func(plog.Logs) error {
	return func(ld plog.Logs) error {
		body, err := plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
		if err != nil {
			return err
		}
		resp, err := client.Post("https://"+addr+"/v1/logs", "application/x-protobuf", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST /v1/logs: %s", resp.Status)
		}
		return nil
	}
}
