package e2e

import (
	"context"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // the otlp_grpc exporter compresses with gzip by default
)

// receivedRecord is one log record as the sink received it.
type receivedRecord struct {
	eventName string
	attrs     map[string]any
	at        time.Time
}

// logSink is an OTLP/gRPC logs server on loopback that hands every record it
// receives to the test.
type logSink struct {
	plogotlp.UnimplementedGRPCServer
	records chan receivedRecord
	port    int
}

// startSink serves OTLP/gRPC logs on a free loopback port until the test ends.
func startSink(t *testing.T) *logSink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sink listen: %v", err)
	}
	s := &logSink{records: make(chan receivedRecord, 1024), port: l.Addr().(*net.TCPAddr).Port}
	srv := grpc.NewServer()
	plogotlp.RegisterGRPCServer(srv, s)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("sink server: %v", err)
		}
	})
	return s
}

// Export copies the records out of the request: it is not used after Export
// returns.
func (s *logSink) Export(ctx context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	now := time.Now()
	rls := req.Logs().ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		sls := rls.At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			lrs := sls.At(j).LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				lr := lrs.At(k)
				rec := receivedRecord{eventName: lr.EventName(), attrs: lr.Attributes().AsRaw(), at: now}
				select {
				case s.records <- rec:
				case <-ctx.Done():
					return plogotlp.NewExportResponse(), ctx.Err()
				}
			}
		}
	}
	return plogotlp.NewExportResponse(), nil
}
