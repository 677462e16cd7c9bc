package fleet

import (
	"context"
	"net"
	"sync"
	"testing"

	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // the otlp_grpc exporter compresses with gzip by default
)

// record is one log record as a sink received it.
type record struct {
	eventName string
	attrs     map[string]any
}

func (r record) str(key string) string {
	s, _ := r.attrs[key].(string)
	return s
}

func (r record) int(key string) int64 {
	n, _ := r.attrs[key].(int64)
	return n
}

// logSink is an OTLP/gRPC logs server that keeps every record it receives.
type logSink struct {
	plogotlp.UnimplementedGRPCServer
	mu      sync.Mutex
	records []record
	addr    string
}

// serveSink serves OTLP/gRPC logs on l until the test ends.
func serveSink(t *testing.T, l net.Listener) *logSink {
	t.Helper()
	s := &logSink{addr: l.Addr().String()}
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

// Export copies the records out of the request.
func (s *logSink) Export(_ context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	var got []record
	rls := req.Logs().ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		sls := rls.At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			lrs := sls.At(j).LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				lr := lrs.At(k)
				got = append(got, record{eventName: lr.EventName(), attrs: lr.Attributes().AsRaw()})
			}
		}
	}
	s.mu.Lock()
	s.records = append(s.records, got...)
	s.mu.Unlock()
	return plogotlp.NewExportResponse(), nil
}

// snapshot returns a copy of the records received so far.
func (s *logSink) snapshot() []record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]record(nil), s.records...)
}
