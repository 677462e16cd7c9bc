package ownershipprocessor

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/processor/processortest"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/internal/testutil/fuzzbytes"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

// knownKeys are the attributes the processor reads; the fuzzer gives them
// every value type.
var knownKeys = []string{
	flowschema.AttrNetworkPeerAddress,
	flowschema.AttrNetworkLocalAddress,
	flowschema.AttrFlowStartTime,
	flowschema.AttrClaimAddress,
	flowschema.AttrClaimStartTime,
	flowschema.AttrClaimEndTime,
	flowschema.AttrClaimSender,
	flowschema.PrefixClaimOwner + "id",
	flowschema.PrefixClaimOwner + "service.name",
	flowschema.PrefixLocalOwner + "id",
	flowschema.PrefixPeerOwner + "id",
	flowschema.AttrPeerAttributionReason,
}

var fuzzAddrs = []string{"10.0.0.2", "10.0.0.3", "::ffff:10.0.0.2", "fe80::1%eth0", "203.0.113.9", "198.51.100.1", "10.0.0.300", "", "fd00::1"}

func putValue(s *fuzzbytes.Source, attrs pcommon.Map, key string) {
	near := t0.Add(time.Duration(int8(s.Byte())) * 10 * time.Second).UnixNano()
	switch s.Byte() % 10 {
	case 0:
		return
	case 1:
		attrs.PutStr(key, fuzzAddrs[int(s.Byte())%len(fuzzAddrs)])
	case 2:
		attrs.PutInt(key, near)
	case 3:
		attrs.PutInt(key, s.Int64())
	case 4:
		attrs.PutDouble(key, float64(s.Int64()))
	case 5:
		attrs.PutBool(key, s.Byte()%2 == 0)
	case 6:
		attrs.PutEmptyBytes(key).FromRaw([]byte{s.Byte()})
	case 7:
		attrs.PutEmptyMap(key).PutStr("x", "y")
	case 8:
		attrs.PutEmptySlice(key).AppendEmpty().SetInt(near)
	case 9:
		attrs.PutEmpty(key)
	}
}

// synthesize builds records of every kind with random attribute types for
// the keys the processor reads.
func synthesize(data []byte) plog.Logs {
	src := fuzzbytes.New(data)
	ld := plog.NewLogs()
	for range int(src.Byte()%3) + 1 {
		rl := ld.ResourceLogs().AppendEmpty()
		for range int(src.Byte() % 3) {
			sl := rl.ScopeLogs().AppendEmpty()
			for range int(src.Byte() % 8) {
				lr := sl.LogRecords().AppendEmpty()
				switch src.Byte() % 4 {
				case 0:
					lr.SetEventName(flowschema.EventFlow)
				case 1:
					lr.SetEventName(flowschema.EventClaim)
				case 2:
					lr.SetEventName("other")
				}
				if src.Byte()%2 == 0 {
					lr.SetTimestamp(pcommon.Timestamp(t0.Add(time.Duration(int8(src.Byte())) * 10 * time.Second).UnixNano()))
				} else {
					lr.SetTimestamp(pcommon.Timestamp(uint64(src.Int64())))
				}
				for _, k := range knownKeys {
					putValue(src, lr.Attributes(), k)
				}
			}
		}
	}
	return ld
}

func fuzzConfig() *Config {
	cfg := createDefaultConfig()
	cfg.MaxPending = 3
	cfg.WorkloadCIDRs = []string{"10.0.0.0/8", "fd00::/8"}
	cfg.StaticOwners = []owners.Entry{{Prefixes: []string{"203.0.113.0/24"}, ID: "lb"}}
	cfg.Senders = map[string][]string{"10.0.0.2": {"10.0.0.0/24"}}
	return cfg
}

func FuzzConsumeLogs(f *testing.F) {
	seed := logsOf(
		claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, "10.0.0.2"),
		ownedFlow("10.0.0.3", "cart", "10.0.0.2", t0.Add(-time.Second), t0),
		flow("10.0.0.1", "10.0.0.9", t0, t0),
		flow("10.0.0.1", "203.0.113.9", t0, t0),
	)
	pb, err := (&plog.ProtoMarshaler{}).MarshalLogs(seed)
	require.NoError(f, err)
	f.Add(pb, false)
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, true)
	f.Add([]byte{0xff, 0xfe, 0x01, 0x00, 0x7f, 0x80, 0x02, 0x03}, true)

	f.Fuzz(func(t *testing.T, data []byte, synthetic bool) {
		var ld plog.Logs
		if synthetic {
			ld = synthesize(data)
		} else {
			var err error
			if ld, err = (&plog.ProtoUnmarshaler{}).UnmarshalLogs(data); err != nil {
				return
			}
		}
		in := ld.LogRecordCount()
		claims := 0
		for _, rl := range ld.ResourceLogs().All() {
			for _, sl := range rl.ScopeLogs().All() {
				for _, lr := range sl.LogRecords().All() {
					if lr.EventName() == flowschema.EventClaim {
						claims++
					}
				}
			}
		}

		clk := newTestClock()
		sink := new(consumertest.LogsSink)
		set := processortest.NewNopSettings(metadata.Type)
		set.ID = component.NewID(metadata.Type)
		p, err := NewFactoryWithClock(clk).CreateLogs(context.Background(), set, fuzzConfig(), sink)
		require.NoError(t, err)
		require.NoError(t, p.ConsumeLogs(context.Background(), ld))
		require.NoError(t, p.Shutdown(context.Background()))
		// Nothing is lost: every record but the claims comes out, held
		// ones at the latest at shutdown.
		require.Equal(t, in-claims, sink.LogRecordCount())
	})
}
