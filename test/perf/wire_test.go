//go:build linux

package perf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// The load generator and the sink move OTLP requests as bytes encoded once
// (generator) or scanned without building pdata (sink): on a 2-core machine
// shared with the collector under test, whatever CPU they spend is taken from
// the collector, and the comparison between pipelines is fairer the less
// that is.

// exportMethod is the full gRPC method name of OTLP logs export.
const exportMethod = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

// rawMessage is an already encoded protobuf message.
type rawMessage struct{ b []byte }

// rawCodec passes rawMessage bytes through. Its name is "proto" so that the
// content-subtype on the wire is the one OTLP servers expect.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rawMessage)
	if !ok {
		return nil, fmt.Errorf("raw codec cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMessage)
	if !ok {
		return fmt.Errorf("raw codec cannot unmarshal into %T", v)
	}
	m.b = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// otlpClient sends encoded ExportLogsServiceRequests.
type otlpClient struct{ conn *grpc.ClientConn }

func dialOTLP(tb testing.TB, port int) *otlpClient {
	tb.Helper()
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", port),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &otlpClient{conn: conn}
}

// export sends one encoded request and waits for the collector to accept it.
func (c *otlpClient) export(ctx context.Context, req []byte) error {
	var resp rawMessage
	return c.conn.Invoke(ctx, exportMethod, &rawMessage{b: req}, &resp)
}

// recordCounts counts log records by kind.
type recordCounts struct {
	flows, attributed, claims, other int64
}

// countRecords scans an encoded ExportLogsServiceRequest and counts its log
// records by EventName, and the flow records whose attribution status is
// "attributed".
func countRecords(req []byte) (recordCounts, error) {
	var n recordCounts
	err := forEachBytesField(req, 1, func(resourceLogs []byte) error { // resource_logs
		return forEachBytesField(resourceLogs, 2, func(scopeLogs []byte) error { // scope_logs
			return forEachBytesField(scopeLogs, 2, n.add) // log_records
		})
	})
	return n, err
}

func (n *recordCounts) add(record []byte) error {
	var event []byte
	attributed := false
	err := forEachField(record, func(num protowire.Number, v []byte) error {
		switch num {
		case 12: // event_name
			event = v
		case 6: // attributes
			key, value, err := keyValue(v)
			if err != nil {
				return err
			}
			if string(key) == flowschema.AttrPeerAttributionStatus && string(value) == "attributed" {
				attributed = true
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch string(event) {
	case flowschema.EventFlow:
		n.flows++
		if attributed {
			n.attributed++
		}
	case flowschema.EventClaim:
		n.claims++
	default:
		n.other++
	}
	return nil
}

// keyValue returns the key of an encoded KeyValue and its value when it is a
// string (nil otherwise).
func keyValue(kv []byte) (key, str []byte, err error) {
	err = forEachField(kv, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			key = v
		case 2:
			return forEachBytesField(v, 1, func(s []byte) error { // AnyValue.string_value
				str = s
				return nil
			})
		}
		return nil
	})
	return key, str, err
}

// forEachBytesField calls fn with the payload of every length-delimited
// field number want in msg.
func forEachBytesField(msg []byte, want protowire.Number, fn func([]byte) error) error {
	return forEachField(msg, func(num protowire.Number, v []byte) error {
		if num == want {
			return fn(v)
		}
		return nil
	})
}

// forEachField calls fn with every length-delimited field of msg and skips
// the others.
func forEachField(msg []byte, fn func(protowire.Number, []byte) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, msg)
			if n < 0 {
				return protowire.ParseError(n)
			}
			msg = msg[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		if err := fn(num, v); err != nil {
			return err
		}
	}
	return nil
}

// sink is an OTLP/gRPC logs server on loopback that counts what it receives.
type sink struct {
	port                                       int
	flows, attributed, claims, other, requests atomic.Int64
	failures                                   atomic.Int64 // requests that did not parse
}

// exportServer is the handler type of the sink's hand-written service
// description (there is no generated server for raw bytes).
type exportServer interface {
	export(*rawMessage) error
}

var logsService = grpc.ServiceDesc{
	ServiceName: "opentelemetry.proto.collector.logs.v1.LogsService",
	HandlerType: (*exportServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Export",
		Handler: func(srv any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req rawMessage
			if err := dec(&req); err != nil {
				return nil, err
			}
			// An empty ExportLogsServiceResponse is zero bytes.
			return &rawMessage{}, srv.(exportServer).export(&req)
		},
	}},
}

func startSink(tb testing.TB) *sink {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("sink listen: %v", err)
	}
	s := &sink{port: l.Addr().(*net.TCPAddr).Port}
	// The batch processor's batches of 8192 flow records are about 10 MB.
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.MaxRecvMsgSize(64<<20))
	srv.RegisterService(&logsService, s)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	tb.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			tb.Errorf("sink server: %v", err)
		}
	})
	return s
}

func (s *sink) export(req *rawMessage) error {
	n, err := countRecords(req.b)
	if err != nil {
		s.failures.Add(1)
		return err
	}
	s.requests.Add(1)
	s.flows.Add(n.flows)
	s.attributed.Add(n.attributed)
	s.claims.Add(n.claims)
	s.other.Add(n.other)
	return nil
}
