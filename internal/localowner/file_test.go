package localowner

import (
	"context"
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

func TestFileSourceReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.yaml")
	core, logs := observer.New(zap.WarnLevel)
	var counts reloadCounter
	src := NewFileSource(path, time.Hour, zap.New(core), counts.record)
	src.settle = func() {} // nothing writes the file meanwhile

	// Missing at start: an empty map, one counted error however often polled.
	assert.False(t, src.reload())
	assert.False(t, src.reload())
	assert.Empty(t, src.Entries())
	assert.Equal(t, map[string]int{ReloadError: 1}, counts.get())
	assert.Equal(t, 1, logs.Len())

	replaceFile(t, path, "10.0.0.1: a\n10.0.1.0/24: {id: pool, attributes: {service.name: batch}}\n")
	assert.True(t, src.reload())
	assert.Equal(t, map[string]string{"10.0.0.1/32": "a", "10.0.1.0/24": "pool"}, ownerIDs(src.Entries()))
	assert.Equal(t, []owners.Attribute{{Name: "service.name", Value: "batch"}}, src.Entries()[netip.MustParsePrefix("10.0.1.0/24")].Attributes)
	assert.False(t, src.reload(), "unchanged content is not a change")
	assert.Equal(t, map[string]int{ReloadError: 1}, counts.get(), "successes are counted by Start's poller")

	// Atomic replace with new content.
	replaceFile(t, path, `{"10.0.0.1": "b", "::ffff:10.0.0.2": {"id": "c"}}`)
	assert.True(t, src.reload())
	assert.Equal(t, map[string]string{"10.0.0.1/32": "b", "10.0.0.2/32": "c"}, ownerIDs(src.Entries()))

	// A corrupt file keeps the last good map, counted and logged once.
	writeInPlace(t, path, "10.0.0.1: [oops\n")
	assert.False(t, src.reload())
	assert.False(t, src.reload())
	assert.Equal(t, map[string]string{"10.0.0.1/32": "b", "10.0.0.2/32": "c"}, ownerIDs(src.Entries()))
	assert.Equal(t, map[string]int{ReloadError: 2}, counts.get())
	assert.Equal(t, 2, logs.Len())
	assert.Equal(t, int64(2), logs.All()[1].ContextMap()["entries_kept"])

	// Truncated mid-write: also an error, not an empty map.
	writeInPlace(t, path, "")
	assert.False(t, src.reload())
	assert.Len(t, src.Entries(), 2)
	assert.Equal(t, map[string]int{ReloadError: 3}, counts.get())

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
	src := NewFileSource(path, time.Hour, zap.NewNop(), counts.record)
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
	assert.Equal(t, map[string]int{ReloadDeferred: 2}, counts.get())
}

// A file written moments before Start is loaded by Start, before capture
// begins, so its entries predate every flow.
func TestFileSourceStartLoadsAFileJustWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.yaml")
	writeInPlace(t, path, "10.0.0.1: a\n")
	src := NewFileSource(path, time.Hour, zap.NewNop(), func(string) {})
	require.NoError(t, src.Start(context.Background(), func() {}))
	defer func() { require.NoError(t, src.Shutdown()) }()
	assert.Equal(t, map[string]string{"10.0.0.1/32": "a"}, ownerIDs(src.Entries()))
}

func TestFileSourcePollsAndNotifies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.json")
	replaceFile(t, path, `{"10.0.0.1": "a"}`)
	var counts reloadCounter
	src := NewFileSource(path, 10*time.Millisecond, zap.NewNop(), counts.record)
	clock := newManualClock(at(0))
	own := New([]Source{src}, clock.settings())
	require.NoError(t, own.Start(context.Background()))
	defer func() { require.NoError(t, own.Shutdown()) }()

	owner := func() string {
		e, ok := own.Lookup(netip.MustParseAddr("10.0.0.1"))
		if !ok {
			return ""
		}
		return e.Owner().ID
	}
	assert.Equal(t, "a", owner(), "loaded synchronously at start")
	assert.Equal(t, map[string]int{ReloadSuccess: 1}, counts.get())
	clock.Set(at(7))
	replaceFile(t, path, `{"10.0.0.1": "b"}`)
	// The success is counted once the merged map uses the new content.
	require.Eventually(t, func() bool { return counts.get()[ReloadSuccess] == 2 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, "b", owner())
	assertSince(t, lookup(t, own, "10.0.0.1"), 7, "a changed owner is known from the rebuild")
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
		_, err := ParseFile([]byte(in))
		assert.ErrorContains(t, err, want, "input %q", in)
	}
}

// A poll's load counts as a success only once onChange, the merge of the
// new map, has returned: operators release an address on that count.
func TestFileSourceCountsSuccessAfterTheMerge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.json")
	replaceFile(t, path, `{"10.0.0.1": "a"}`)
	var counts reloadCounter
	src := NewFileSource(path, 10*time.Millisecond, zap.NewNop(), counts.record)
	src.settle = func() {} // nothing writes the file meanwhile
	merging := make(chan int, 1)
	require.NoError(t, src.Start(context.Background(), func() { merging <- counts.get()[ReloadSuccess] }))
	defer func() { require.NoError(t, src.Shutdown()) }()
	replaceFile(t, path, `{"10.0.0.1": "b"}`)
	assert.Equal(t, 1, <-merging, "only the load at Start counted while the poll's merge runs")
	require.Eventually(t, func() bool { return counts.get()[ReloadSuccess] == 2 }, 5*time.Second, 5*time.Millisecond)
}

func FuzzParseFile(f *testing.F) {
	for _, seed := range []string{
		"10.0.0.1: a\n",
		"10.0.1.0/24: {id: pool, attributes: {service.name: batch, k8s.namespace.name: shop}}\n",
		`{"::ffff:10.0.0.2": {"id": "c"}, "2001:db8::/32": "v6"}`,
		"{}",
		"",
		"10.0.0.1: {id: a, attributes: {b: 1, b: 2}}\n",
		"10.0.0.1: &x a\n10.0.0.2: *x\n",
		"? [a]\n: b\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseFile(data)
		if err != nil {
			if m != nil {
				t.Fatalf("error %v with a non-nil map", err)
			}
			return
		}
		for p, o := range m {
			if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				t.Fatalf("accepted non-canonical prefix %s", p)
			}
			if o.ID == "" {
				t.Fatalf("accepted an empty owner ID for %s", p)
			}
			if !o.Equal(o.Canonical()) {
				t.Fatalf("owner of %s is not canonical: %+v", p, o)
			}
			for _, a := range o.Attributes {
				if owners.CheckAttributeName(a.Name) != nil {
					t.Fatalf("accepted attribute name %q for %s", a.Name, p)
				}
			}
		}
	})
}
