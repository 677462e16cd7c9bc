package e2e

import (
	"context"
	"strconv"
	"testing"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// dialOTLP returns a client of the collector's OTLP/gRPC receiver on
// 127.0.0.1:port; its connection closes when the test ends.
func dialOTLP(t *testing.T, port int) plogotlp.GRPCClient {
	t.Helper()
	conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return plogotlp.NewGRPCClient(conn)
}

// exportLogs sends ld and fails the test unless the collector accepts
// every record.
func exportLogs(ctx context.Context, t *testing.T, client plogotlp.GRPCClient, ld plog.Logs) {
	t.Helper()
	resp, err := client.Export(ctx, plogotlp.NewExportRequestFromLogs(ld))
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if ps := resp.PartialSuccess(); ps.RejectedLogRecords() != 0 {
		t.Fatalf("collector rejected %d records: %s", ps.RejectedLogRecords(), ps.ErrorMessage())
	}
}
