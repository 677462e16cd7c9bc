package e2e

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

const (
	serverAddr = "127.77.0.1" // owned by e2e-server in testdata/e2e-ebpf.yaml
	clientAddr = "127.77.0.2" // owned by e2e-client
	requestLen = 1000
	replyLen   = 3000
)

// requireRoot skips the test when it cannot load eBPF programs, except in
// CI, which runs as root and must run it.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the kernel end-to-end test needs root to load eBPF programs, and CI runs as root")
	}
	t.Skip("needs root to load eBPF programs")
}

// TestFlowsFromKernel runs the collector with the ebpfflow receiver, makes
// one TCP connection between two loopback addresses with known owners, and
// checks both sides' flow records: addresses, ports, roles, exact payload
// byte counts, the local owner from the receiver and the peer owner from
// the ownership processor.
// e2eClockSkew is the processor's clock_skew in testdata/e2e-ebpf.yaml.
const e2eClockSkew = 200 * time.Millisecond

func TestFlowsFromKernel(t *testing.T) {
	requireRoot(t)
	sink := collectortest.StartSink(t)
	healthPort := collectortest.FreePort(t)
	col := collectortest.Start(t, collectortest.Options{
		Configs: []string{"../../testdata/e2e-ebpf.yaml"},
		Env: map[string]string{
			"FLOWATTR_E2E_HEALTH_PORT": strconv.Itoa(healthPort),
			"FLOWATTR_E2E_SINK_PORT":   strconv.Itoa(int(sink.Addr.Port())),
		},
	})
	col.WaitReady(t, "127.0.0.1:"+strconv.Itoa(healthPort))
	// Claims start when the receiver starts: a flow starting within
	// clock_skew of that is near_unclaimed_edge by design, so connect after.
	time.Sleep(e2eClockSkew)

	before := time.Now()
	serverPort, clientPort := exchange(t)
	after := time.Now()

	byRole := map[string]collectortest.Record{}
	filed := 0
	deadline := time.Now().Add(30 * time.Second)
	for len(byRole) < 2 {
		records := sink.Records()
		for _, rec := range records[filed:] {
			if rec.EventName != flowschema.EventFlow {
				t.Fatalf("forwarded a record with event name %q, want only flow records: %v", rec.EventName, rec.Attrs)
			}
			// Another run of this test on the same host makes connections
			// between the same addresses, with other ports.
			if rec.Attrs[flowschema.AttrServerPort] != int64(serverPort) {
				continue
			}
			role := rec.Str(flowschema.AttrFlowRole)
			if _, dup := byRole[role]; dup {
				t.Fatalf("second %q flow record: %v", role, rec.Attrs)
			}
			byRole[role] = rec
		}
		filed = len(records)
		if len(byRole) < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("received flow records for roles %v, want client and server", keys(byRole))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	sides := []struct {
		role                  string
		local, peer           string
		localPort, peerPort   int
		localOwner, peerOwner string
		sent, received        int64
	}{
		{
			role: flowschema.RoleClient, local: clientAddr, peer: serverAddr, localPort: clientPort, peerPort: serverPort,
			localOwner: "e2e-client", peerOwner: "e2e-server", sent: requestLen, received: replyLen,
		},
		{
			role: flowschema.RoleServer, local: serverAddr, peer: clientAddr, localPort: serverPort, peerPort: clientPort,
			localOwner: "e2e-server", peerOwner: "e2e-client", sent: replyLen, received: requestLen,
		},
	}
	for _, s := range sides {
		t.Run(s.role, func(t *testing.T) {
			attrs := byRole[s.role].Attrs
			want := map[string]any{
				flowschema.AttrNetworkTransport:                        "tcp",
				flowschema.AttrNetworkType:                             "ipv4",
				flowschema.AttrNetworkLocalAddress:                     s.local,
				flowschema.AttrNetworkLocalPort:                        int64(s.localPort),
				flowschema.AttrNetworkPeerAddress:                      s.peer,
				flowschema.AttrNetworkPeerPort:                         int64(s.peerPort),
				flowschema.AttrFlowState:                               flowschema.FlowStateClosed,
				flowschema.AttrFlowBytesSent:                           s.sent,
				flowschema.AttrFlowBytesReceived:                       s.received,
				flowschema.AttrProcessPID:                              int64(os.Getpid()),
				flowschema.AttrProcessExecutableName:                   comm(),
				flowschema.PrefixLocalOwner + flowschema.OwnerIDSuffix: s.localOwner,
				flowschema.PrefixLocalOwner + "service.name":           s.localOwner,
				flowschema.PrefixPeerOwner + flowschema.OwnerIDSuffix:  s.peerOwner,
				flowschema.PrefixPeerOwner + "service.name":            s.peerOwner,
				flowschema.AttrPeerAttributionStatus:                   "attributed",
				flowschema.AttrClientAddress:                           clientAddr,
				flowschema.AttrServerAddress:                           serverAddr,
				flowschema.AttrServerPort:                              int64(serverPort),
				flowschema.AttrClientPort:                              int64(clientPort),
				flowschema.AttrFlowRole:                                s.role,
			}
			for k, v := range want {
				if got := attrs[k]; got != v {
					t.Errorf("%s = %v (%T), want %v (%T)", k, got, got, v, v)
				}
			}
			startNanos, _ := attrs[flowschema.AttrFlowStartTime].(int64)
			if start := time.Unix(0, startNanos); start.Before(before.Add(-time.Second)) || start.After(after) {
				t.Errorf("%s = %s, want between %s and %s", flowschema.AttrFlowStartTime, start, before, after)
			}
		})
	}

	col.Stop(t)
}

// exchange makes one connection from clientAddr to serverAddr: the client
// sends requestLen bytes, the server replies with replyLen bytes and closes
// first, the client reads to EOF and closes.
func exchange(t *testing.T) (serverPort, clientPort int) {
	t.Helper()
	l, err := net.Listen("tcp", serverAddr+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", serverAddr, err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		if _, err := io.ReadFull(conn, make([]byte, requestLen)); err != nil {
			served <- err
			return
		}
		_, err = conn.Write(bytes.Repeat([]byte{'r'}, replyLen))
		served <- err
	}()

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientAddr)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", l.Addr(), clientAddr, err)
	}
	defer conn.Close()
	if _, err := conn.Write(bytes.Repeat([]byte{'q'}, requestLen)); err != nil {
		t.Fatalf("client write: %v", err)
	}
	reply, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	if len(reply) != replyLen {
		t.Fatalf("client read %d bytes, want %d", len(reply), replyLen)
	}
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
	return l.Addr().(*net.TCPAddr).Port, conn.LocalAddr().(*net.TCPAddr).Port
}

// comm is this process's name as the kernel keeps it: the executable's base
// name cut to 15 bytes.
func comm() string {
	name := filepath.Base(os.Args[0])
	if len(name) > 15 {
		name = name[:15]
	}
	return name
}

func keys(m map[string]collectortest.Record) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
