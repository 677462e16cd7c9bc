package ebpfflowreceiver

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/flowattr/flowattr/internal/owners"
)

func TestStaticSourceDefaultIsHostIdentity(t *testing.T) {
	idFile := filepath.Join(t.TempDir(), "machine-id")
	require.NoError(t, os.WriteFile(idFile, []byte("0123456789abcdef\n"), 0o600))
	host, err := readHostIdentity(idFile)
	require.NoError(t, err)
	name, _ := os.Hostname()
	assert.Equal(t, hostIdentity{name: name, id: "0123456789abcdef"}, host)

	src, err := newStaticSource(createDefaultConfig().Ownership.Static, host,
		listAddrs("192.0.2.10", "2001:db8::10"), time.Hour, zap.NewNop())
	require.NoError(t, err)
	want := owners.Owner{ID: name, Attributes: []owners.Attribute{{Name: "host.id", Value: "0123456789abcdef"}, {Name: "host.name", Value: name}}}
	assert.Equal(t, map[netip.Prefix]owners.Owner{
		netip.MustParsePrefix("192.0.2.10/32"):    want,
		netip.MustParsePrefix("2001:db8::10/128"): want,
	}, src.Entries())
}

func TestStaticSourceEntriesWinOverHostAddresses(t *testing.T) {
	cfg := StaticSourceConfig{HostAddresses: true, Entries: []StaticEntry{{
		Prefixes: []string{"192.0.2.10", "10.0.0.0/24"}, Owner: "svc", Attributes: map[string]string{"service.name": "svc", "a": "1"},
	}}}
	src, err := newStaticSource(cfg, hostIdentity{name: "h"}, listAddrs("192.0.2.10", "192.0.2.11"), time.Hour, zap.NewNop())
	require.NoError(t, err)
	svc := owners.Owner{ID: "svc", Attributes: []owners.Attribute{{Name: "a", Value: "1"}, {Name: "service.name", Value: "svc"}}}
	assert.Equal(t, svc, src.Entries()[netip.MustParsePrefix("192.0.2.10/32")])
	assert.Equal(t, svc, src.Entries()[netip.MustParsePrefix("10.0.0.0/24")])
	assert.Equal(t, "h", src.Entries()[netip.MustParsePrefix("192.0.2.11/32")].ID)
}

func listAddrs(addrs ...string) func() ([]netip.Addr, error) {
	return func() ([]netip.Addr, error) {
		out := make([]netip.Addr, len(addrs))
		for i, s := range addrs {
			out[i] = netip.MustParseAddr(s)
		}
		return out, nil
	}
}

func TestStaticSourceFollowsHostAddresses(t *testing.T) {
	current := []string{"192.0.2.10", "192.0.2.11"}
	var mu sync.Mutex
	list := func() ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		if current == nil {
			return nil, errors.New("netlink: no")
		}
		return listAddrs(current...)()
	}
	src, err := newStaticSource(StaticSourceConfig{HostAddresses: true}, hostIdentity{name: "h"}, list, time.Hour, zap.NewNop())
	require.NoError(t, err)
	assert.False(t, src.refreshHostAddrs(), "same addresses, no change")

	mu.Lock()
	current = []string{"192.0.2.11", "192.0.2.12"}
	mu.Unlock()
	assert.True(t, src.refreshHostAddrs())
	assert.Equal(t, map[string]string{"192.0.2.11/32": "h", "192.0.2.12/32": "h"}, ownerIDs(src.Entries()), "a lost address is no longer the host's")

	mu.Lock()
	current = nil
	mu.Unlock()
	assert.False(t, src.refreshHostAddrs(), "a failed listing keeps the previous addresses")
	assert.Len(t, src.Entries(), 2)

	_, err = newStaticSource(StaticSourceConfig{HostAddresses: true}, hostIdentity{name: "h"}, list, time.Hour, zap.NewNop())
	assert.ErrorContains(t, err, "ownership.static.host_addresses")
}

func TestHostUnicastAddrsSkipsLoopback(t *testing.T) {
	addrs, err := hostUnicastAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		assert.False(t, a.IsLoopback() || a.IsLinkLocalUnicast() || a.Is4In6(), a.String())
	}
}

// reloadCounter counts file source loads by result.
type reloadCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *reloadCounter) record(result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[result]++
}

func (c *reloadCounter) get() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// replaceFile writes data to path the way orchestrators do: a temporary file
// in the same directory renamed over the target.
func replaceFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(data), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// writeInPlace rewrites path in place: truncated, then written.
func writeInPlace(t *testing.T, path, data string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(data), 0o600))
}

func ownerIDs(m map[netip.Prefix]owners.Owner) map[string]string {
	out := map[string]string{}
	for p, o := range m {
		out[p.String()] = o.ID
	}
	return out
}

func TestFileSourceReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.yaml")
	core, logs := observer.New(zap.WarnLevel)
	var counts reloadCounter
	src := newFileSource(FileSourceConfig{Path: path, PollInterval: time.Hour}, zap.New(core), counts.record)
	src.settle = func() {} // nothing writes the file meanwhile

	// Missing at start: an empty map, one counted error however often polled.
	assert.False(t, src.reload())
	assert.False(t, src.reload())
	assert.Empty(t, src.Entries())
	assert.Equal(t, map[string]int{reloadError: 1}, counts.get())
	assert.Equal(t, 1, logs.Len())

	replaceFile(t, path, "10.0.0.1: a\n10.0.1.0/24: {id: pool, attributes: {service.name: batch}}\n")
	assert.True(t, src.reload())
	assert.Equal(t, map[string]string{"10.0.0.1/32": "a", "10.0.1.0/24": "pool"}, ownerIDs(src.Entries()))
	assert.Equal(t, []owners.Attribute{{Name: "service.name", Value: "batch"}}, src.Entries()[netip.MustParsePrefix("10.0.1.0/24")].Attributes)
	assert.False(t, src.reload(), "unchanged content is not a change")
	assert.Equal(t, map[string]int{reloadError: 1}, counts.get(), "successes are counted by Start's poller")

	// Atomic replace with new content.
	replaceFile(t, path, `{"10.0.0.1": "b", "::ffff:10.0.0.2": {"id": "c"}}`)
	assert.True(t, src.reload())
	assert.Equal(t, map[string]string{"10.0.0.1/32": "b", "10.0.0.2/32": "c"}, ownerIDs(src.Entries()))

	// A corrupt file keeps the last good map, counted and logged once.
	writeInPlace(t, path, "10.0.0.1: [oops\n")
	assert.False(t, src.reload())
	assert.False(t, src.reload())
	assert.Equal(t, map[string]string{"10.0.0.1/32": "b", "10.0.0.2/32": "c"}, ownerIDs(src.Entries()))
	assert.Equal(t, map[string]int{reloadError: 2}, counts.get())
	assert.Equal(t, 2, logs.Len())
	assert.Equal(t, int64(2), logs.All()[1].ContextMap()["entries_kept"])

	// Truncated mid-write: also an error, not an empty map.
	writeInPlace(t, path, "")
	assert.False(t, src.reload())
	assert.Len(t, src.Entries(), 2)
	assert.Equal(t, map[string]int{reloadError: 3}, counts.get())

	// Deliberately empty.
	replaceFile(t, path, "{}")
	assert.True(t, src.reload())
	assert.Empty(t, src.Entries())
}

// An edit in place caught midway often parses: new content is loaded only if
// a second read fileSettle later finds the same, whatever the file's
// modification time says.
func TestFileSourceLoadsOnlyContentThatStaysTheSame(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.yaml")
	var counts reloadCounter
	src := newFileSource(FileSourceConfig{Path: path, PollInterval: time.Hour}, zap.NewNop(), counts.record)
	waits := 0
	src.settle = func() { waits++ }
	writeInPlace(t, path, "10.0.0.1: a\n")
	require.True(t, src.reload())
	assert.False(t, src.reload(), "unchanged content is not a change")
	assert.Equal(t, 1, waits, "only new content is read twice")

	// A writer truncates the file and has written part of it when a poll
	// comes; it finishes while the poll waits. The file looks old, as on a
	// filesystem with coarse times, or new, as from a clock ahead: neither
	// matters.
	for _, modified := range []time.Time{time.Now().Add(-time.Hour), time.Now().Add(time.Hour)} {
		writeInPlace(t, path, "10.0.0.1: checkout-7f")
		require.NoError(t, os.Chtimes(path, modified, modified))
		src.settle = func() { writeInPlace(t, path, "10.0.0.1: checkout-7f9c\n") }
		assert.False(t, src.reload())
		assert.Equal(t, map[string]string{"10.0.0.1/32": "a"}, ownerIDs(src.Entries()), "a half-written file is not loaded")

		// The next poll finds the whole file, the same across the wait.
		src.settle = func() {}
		assert.True(t, src.reload())
		assert.Equal(t, map[string]string{"10.0.0.1/32": "checkout-7f9c"}, ownerIDs(src.Entries()))
		writeInPlace(t, path, "10.0.0.1: a\n")
		require.True(t, src.reload())
	}
	assert.Equal(t, map[string]int{reloadDeferred: 2}, counts.get())
}

// A file written moments before Start is loaded by Start, before capture
// begins, so its entries predate every flow.
func TestFileSourceStartLoadsAFileJustWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.yaml")
	writeInPlace(t, path, "10.0.0.1: a\n")
	src := newFileSource(FileSourceConfig{Path: path, PollInterval: time.Hour}, zap.NewNop(), func(string) {})
	require.NoError(t, src.Start(context.Background(), func() {}))
	defer func() { require.NoError(t, src.Shutdown()) }()
	assert.Equal(t, map[string]string{"10.0.0.1/32": "a"}, ownerIDs(src.Entries()))
}

func TestFileSourcePollsAndNotifies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.json")
	replaceFile(t, path, `{"10.0.0.1": "a"}`)
	var counts reloadCounter
	src := newFileSource(FileSourceConfig{Path: path, PollInterval: 10 * time.Millisecond}, zap.NewNop(), counts.record)
	clock := newManualClock(at(0))
	own := newOwnership([]ownershipSource{src}, clock.Now, clock.Boot, zap.NewNop())
	require.NoError(t, own.start(context.Background()))
	defer func() { require.NoError(t, own.shutdown()) }()

	owner := func() string {
		e, ok := own.snapshot().lookup(netip.MustParseAddr("10.0.0.1"))
		if !ok {
			return ""
		}
		return e.owner.ID
	}
	assert.Equal(t, "a", owner(), "loaded synchronously at start")
	assert.Equal(t, map[string]int{reloadSuccess: 1}, counts.get())
	clock.Set(at(7))
	replaceFile(t, path, `{"10.0.0.1": "b"}`)
	// The success is counted once the merged map uses the new content.
	require.Eventually(t, func() bool { return counts.get()[reloadSuccess] == 2 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, "b", owner())
	e, _ := own.snapshot().lookup(netip.MustParseAddr("10.0.0.1"))
	assert.Equal(t, at(7), e.since, "a changed owner is known from the rebuild")
}

func TestParseOwnershipFileErrors(t *testing.T) {
	tests := map[string]string{
		"":                                 "file is empty",
		"# only a comment\n":               "file is empty",
		"- 10.0.0.1\n":                     "top level must be a mapping",
		"10.0.0.1: a\n10.0.0.1/32: b\n":    `names prefix 10.0.0.1/32 a second time`,
		"10.0.0.5/24: a\n":                 "host bits set",
		"banana: a\n":                      "neither an IP address nor a CIDR prefix",
		"10.0.0.1: \n":                     "owner ID must not be empty",
		"10.0.0.1: {attributes: {x: y}}\n": "id is missing",
		"10.0.0.1: {id: a, extra: 1}\n":    `unknown field "extra"`,
		"10.0.0.1: {id: a, attributes: {id: x}}\n": "reserved for the owner ID",
		"10.0.0.1: {id: a, attributes: [x]}\n":     "attributes must be a mapping",
		"10.0.0.1: [a]\n":                          "must be an owner ID or a mapping",
		"10.0.0.1: a\n10.0.0.1: b\n":               "a second time",
	}
	for in, want := range tests {
		_, err := parseOwnershipFile([]byte(in))
		assert.ErrorContains(t, err, want, "input %q", in)
	}
}

// A poll's load counts as a success only once onChange, the merge of the
// new map, has returned: operators release an address on that count.
func TestFileSourceCountsSuccessAfterTheMerge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.json")
	replaceFile(t, path, `{"10.0.0.1": "a"}`)
	var counts reloadCounter
	src := newFileSource(FileSourceConfig{Path: path, PollInterval: 10 * time.Millisecond}, zap.NewNop(), counts.record)
	src.settle = func() {} // nothing writes the file meanwhile
	merging := make(chan int, 1)
	require.NoError(t, src.Start(context.Background(), func() { merging <- counts.get()[reloadSuccess] }))
	defer func() { require.NoError(t, src.Shutdown()) }()
	replaceFile(t, path, `{"10.0.0.1": "b"}`)
	assert.Equal(t, 1, <-merging, "only the load at Start counted while the poll's merge runs")
	require.Eventually(t, func() bool { return counts.get()[reloadSuccess] == 2 }, 5*time.Second, 5*time.Millisecond)
}
