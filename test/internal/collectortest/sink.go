package collectortest

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // the otlp_grpc exporter compresses with gzip by default
)

// Record is one log record as a sink received it.
type Record struct {
	EventName string
	Attrs     map[string]any
	Received  time.Time // when the export request carrying it arrived
}

// Str is the string attribute key, or "" if absent or not a string.
func (r Record) Str(key string) string {
	s, _ := r.Attrs[key].(string)
	return s
}

// Int is the integer attribute key, or 0 if absent or not an integer.
func (r Record) Int(key string) int64 {
	n, _ := r.Attrs[key].(int64)
	return n
}

// Sink is an OTLP/gRPC logs server that keeps every record it receives.
type Sink struct {
	plogotlp.UnimplementedGRPCServer
	// Addr is where the sink listens.
	Addr netip.AddrPort

	mu      sync.Mutex
	records []Record
}

// StartSink serves OTLP/gRPC logs on a free loopback port until the test
// ends.
func StartSink(tb testing.TB) *Sink {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("sink listen: %v", err)
	}
	return ServeSink(tb, l)
}

// ServeSink serves OTLP/gRPC logs on l, a TCP listener, until the test ends.
func ServeSink(tb testing.TB, l net.Listener) *Sink {
	tb.Helper()
	s := &Sink{Addr: l.Addr().(*net.TCPAddr).AddrPort()}
	srv := grpc.NewServer()
	plogotlp.RegisterGRPCServer(srv, s)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	tb.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			tb.Errorf("sink server: %v", err)
		}
	})
	return s
}

// Export copies the records out of the request: it is not used after Export
// returns.
func (s *Sink) Export(_ context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	got := RecordsOf(req.Logs(), time.Now())
	s.mu.Lock()
	s.records = append(s.records, got...)
	s.mu.Unlock()
	return plogotlp.NewExportResponse(), nil
}

// RecordsOf copies every log record in ld, over all resources and scopes,
// marking each received at received.
func RecordsOf(ld plog.Logs, received time.Time) []Record {
	var out []Record
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		sls := rls.At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			lrs := sls.At(j).LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				lr := lrs.At(k)
				out = append(out, Record{EventName: lr.EventName(), Attrs: lr.Attributes().AsRaw(), Received: received})
			}
		}
	}
	return out
}

// Records returns a copy of the records received so far, in arrival order.
func (s *Sink) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.records...)
}
