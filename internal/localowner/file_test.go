package localowner

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
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
	src := NewFileSource(path, time.Hour, owners.DefaultLimits(), zap.New(core), counts.record)
	src.settle = func() {} // nothing writes the file meanwhile

	// Missing at start: an empty map, one counted error however often polled.
	assert.False(t, src.reload())
	assert.False(t, src.reload())
	assert.Empty(t, src.Entries())
	assert.Equal(t, map[string]int{ReloadError: 1}, counts.get())
	assert.Equal(t, 1, logs.Len())

	replaceFile(t, path, "- {prefixes: [10.0.0.1], id: a}\n- {prefixes: [10.0.1.0/24], id: pool, attributes: {service.name: batch}}\n")
	assert.True(t, src.reload())
	assert.Equal(t, map[string]string{"10.0.0.1/32": "a", "10.0.1.0/24": "pool"}, ownerIDs(src.Entries()))
	assert.Equal(t, []owners.Attribute{{Name: "service.name", Value: "batch"}}, src.Entries()[netip.MustParsePrefix("10.0.1.0/24")].Attributes)
	assert.False(t, src.reload(), "unchanged content is not a change")
	assert.Equal(t, map[string]int{ReloadError: 1}, counts.get(), "successes are counted by Start's poller")

	// Atomic replace with new content.
	replaceFile(t, path, `[{"prefixes": ["10.0.0.1"], "id": "b"}, {"prefixes": ["::ffff:10.0.0.2"], "id": "c"}]`)
	assert.True(t, src.reload())
	assert.Equal(t, map[string]string{"10.0.0.1/32": "b", "10.0.0.2/32": "c"}, ownerIDs(src.Entries()))

	// A corrupt file keeps the last good map, counted and logged once.
	writeInPlace(t, path, "- {prefixes: [10.0.0.1, id: oops\n")
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

	// Larger than a reload reads: refused before parsing, whatever it holds.
	replaceFile(t, path, "[]\n#"+strings.Repeat(" ", maxFileSize))
	assert.False(t, src.reload())
	assert.Len(t, src.Entries(), 2)
	assert.Equal(t, map[string]int{ReloadError: 4}, counts.get())
	assert.Contains(t, logs.All()[logs.Len()-1].ContextMap()["error"], "larger than 1048576 bytes")

	// Deliberately empty.
	replaceFile(t, path, "[]")
	assert.True(t, src.reload())
	assert.Empty(t, src.Entries())
}

// An edit in place caught midway often parses: new content is loaded only if
// a second read fileSettle later finds the same, whatever the file's
// modification time says.
func TestFileSourceLoadsOnlyContentThatStaysTheSame(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.yaml")
	var counts reloadCounter
	src := NewFileSource(path, time.Hour, owners.DefaultLimits(), zap.NewNop(), counts.record)
	waits := 0
	src.settle = func() { waits++ }
	writeInPlace(t, path, "- {prefixes: [10.0.0.1], id: a}\n")
	require.True(t, src.reload())
	assert.False(t, src.reload(), "unchanged content is not a change")
	assert.Equal(t, 1, waits, "only new content is read twice")

	// A writer truncates the file and has written part of it when a poll
	// comes; it finishes while the poll waits. The file looks old, as on a
	// filesystem with coarse times, or new, as from a clock ahead: neither
	// matters.
	for _, modified := range []time.Time{time.Now().Add(-time.Hour), time.Now().Add(time.Hour)} {
		writeInPlace(t, path, "- prefixes: [10.0.0.1]\n  id: checkout-7f")
		require.NoError(t, os.Chtimes(path, modified, modified))
		src.settle = func() { writeInPlace(t, path, "- prefixes: [10.0.0.1]\n  id: checkout-7f9c\n") }
		assert.False(t, src.reload())
		assert.Equal(t, map[string]string{"10.0.0.1/32": "a"}, ownerIDs(src.Entries()), "a half-written file is not loaded")

		// The next poll finds the whole file, the same across the wait.
		src.settle = func() {}
		assert.True(t, src.reload())
		assert.Equal(t, map[string]string{"10.0.0.1/32": "checkout-7f9c"}, ownerIDs(src.Entries()))
		writeInPlace(t, path, "- {prefixes: [10.0.0.1], id: a}\n")
		require.True(t, src.reload())
	}
	assert.Equal(t, map[string]int{ReloadDeferred: 2}, counts.get())
}

// A file written moments before Start is loaded by Start, before capture
// begins, so its entries predate every flow.
func TestFileSourceStartLoadsAFileJustWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.yaml")
	writeInPlace(t, path, "- {prefixes: [10.0.0.1], id: a}\n")
	src := NewFileSource(path, time.Hour, owners.DefaultLimits(), zap.NewNop(), func(string) {})
	require.NoError(t, src.Start(context.Background(), func() {}))
	defer func() { require.NoError(t, src.Shutdown()) }()
	assert.Equal(t, map[string]string{"10.0.0.1/32": "a"}, ownerIDs(src.Entries()))
}

func TestFileSourcePollsAndNotifies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.json")
	replaceFile(t, path, `[{"prefixes": ["10.0.0.1"], "id": "a"}]`)
	var counts reloadCounter
	src := NewFileSource(path, 10*time.Millisecond, owners.DefaultLimits(), zap.NewNop(), counts.record)
	clock := newManualClock(at(0))
	own := New([]Source{src}, clockSettings(clock))
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
	replaceFile(t, path, `[{"prefixes": ["10.0.0.1"], "id": "b"}]`)
	// The success is counted once the merged map uses the new content.
	require.Eventually(t, func() bool { return counts.get()[ReloadSuccess] == 2 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, "b", owner())
	assertSince(t, lookup(t, own, "10.0.0.1"), 7, "a changed owner is known from the rebuild")
}

func TestParseFile(t *testing.T) {
	got, err := ParseFile([]byte(`# written by the IPAM agent
- prefixes: [10.0.1.7, "::ffff:10.0.1.8"]
  id: checkout-7f9c
- prefixes: [10.0.2.0/24, 2001:db8::/64]
  id: batch-pool
  attributes: {service.name: batch, k8s.namespace.name: jobs}
`), owners.DefaultLimits())
	require.NoError(t, err)
	pool := owners.Owner{ID: "batch-pool", Attributes: []owners.Attribute{{Name: "k8s.namespace.name", Value: "jobs"}, {Name: "service.name", Value: "batch"}}}
	assert.Equal(t, map[netip.Prefix]owners.Owner{
		netip.MustParsePrefix("10.0.1.7/32"):   {ID: "checkout-7f9c"},
		netip.MustParsePrefix("10.0.1.8/32"):   {ID: "checkout-7f9c"},
		netip.MustParsePrefix("10.0.2.0/24"):   pool,
		netip.MustParsePrefix("2001:db8::/64"): pool,
	}, got)

	got, err = ParseFile([]byte(`[{"prefixes": ["10.0.1.7"], "id": "checkout-7f9c"}]`), owners.DefaultLimits())
	require.NoError(t, err)
	assert.Equal(t, map[netip.Prefix]owners.Owner{netip.MustParsePrefix("10.0.1.7/32"): {ID: "checkout-7f9c"}}, got, "JSON")

	got, err = ParseFile([]byte("[]\n"), owners.DefaultLimits())
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestParseFileErrors(t *testing.T) {
	tests := map[string]string{
		"":                   "file is empty",
		"# only a comment\n": "file is empty",
		"10.0.0.1: a\n":      "line 1: top level must be a list",
		"{}":                 "top level must be a list",
		"- 10.0.0.1\n":       "entries[0] (line 1): must be a mapping with prefixes, id and attributes",
		"- {prefixes: [10.0.0.1], id: a}\n- {prefixes: [10.0.0.1/32], id: b}\n":          "entries[1] (line 2): prefixes: 10.0.0.1/32 is already in entries[0] (line 1)",
		"- {prefixes: [10.0.0.1, \"::ffff:10.0.0.1\"], id: a}\n":                         "is already in entries[0]",
		"- {prefixes: [10.0.0.5/24], id: a}\n":                                           "host bits set",
		"- {prefixes: [banana], id: a}\n":                                                "neither an IP address nor a CIDR prefix",
		"- {prefixes: [], id: a}\n":                                                      "prefixes: must list at least one",
		"- {id: a}\n":                                                                    "prefixes: must list at least one",
		"- {prefixes: 10.0.0.1, id: a}\n":                                                "cannot unmarshal !!str `10.0.0.1` into []string",
		"- {prefixes: [10.0.0.1]}\n":                                                     "entries[0] (line 1): id: must not be empty",
		"- {prefixes: [10.0.0.1], id: }\n":                                               "id: must not be empty",
		"- {prefixes: [10.0.0.1], id: [a]}\n":                                            "cannot unmarshal !!seq into string",
		"- {prefixes: [10.0.0.1], id: a, id: b}\n":                                       `mapping key "id" already defined`,
		"- {prefixes: [10.0.0.1], id: a, attributes: {id: x}}\n":                         "reserved for the owner ID",
		"- {prefixes: [10.0.0.1], id: a, attributes: [x]}\n":                             "cannot unmarshal !!seq into map[string]string",
		"- {prefixes: [10.0.0.1], id: a, attributes: {x: 1, x: 2}}\n":                    `mapping key "x" already defined`,
		"- {prefixes: [10.0.0.1], id: a}\n- prefixes: [10.0.0.2]\n  id: b\n  owner: c\n": `entries[1] (line 2): line 4: unknown field "owner"`,
	}
	for in, want := range tests {
		_, err := ParseFile([]byte(in), owners.DefaultLimits())
		assert.ErrorContains(t, err, want, "input %q", in)
	}
}

// An owner beyond the limits makes the file fail to load, with an error
// naming the entry; the last good map stays, and the failure is counted.
func TestFileSourceRefusesOwnersBeyondLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.yaml")
	core, logs := observer.New(zap.WarnLevel)
	var counts reloadCounter
	limits := owners.Limits{MaxIDLength: 16, MaxAttributes: 2, MaxNameLength: 32, MaxValueLength: 64}
	src := NewFileSource(path, time.Hour, limits, zap.New(core), counts.record)
	src.settle = func() {} // nothing writes the file meanwhile
	replaceFile(t, path, "- {prefixes: [10.0.0.1], id: a, attributes: {service.name: web}}\n")
	require.True(t, src.reload())

	for _, tc := range []struct{ file, err string }{
		{
			"- {prefixes: [10.0.0.1], id: a}\n- {prefixes: [10.0.0.2], id: b, attributes: {service.name: " + strings.Repeat("v", 1<<16) + "}}\n",
			`entries[1] (line 2): attributes: "service.name": value is 65536 bytes, more than max_value_length (64)`,
		},
		{"- {prefixes: [10.0.0.1], id: a, attributes: {a: 1, b: 2, c: 3}}\n", "entries[0] (line 1): attributes: 3 attributes, more than max_attributes (2)"},
		{"- {prefixes: [10.0.0.1], id: " + strings.Repeat("x", 17) + "}\n", "entries[0] (line 1): id: \"xxxxxxxxxxxxxxxxx\" is 17 bytes, more than max_id_length (16)"},
		{"- {prefixes: [10.0.0.1], id: a, attributes: {" + strings.Repeat("n", 33) + ": v}}\n", "entries[0] (line 1): attributes: name \"" + strings.Repeat("n", 33) + "\" is 33 bytes, more than max_name_length (32)"},
	} {
		before := counts.get()[ReloadError]
		replaceFile(t, path, tc.file)
		assert.False(t, src.reload())
		assert.Equal(t, map[string]string{"10.0.0.1/32": "a"}, ownerIDs(src.Entries()), "the last good map stays")
		assert.Equal(t, before+1, counts.get()[ReloadError])
		last := logs.All()[logs.Len()-1]
		assert.Equal(t, "Cannot load ownership file; keeping the last good map", last.Message)
		assert.Equal(t, tc.err, last.ContextMap()["error"])
	}
}

// A poll's load counts as a success only once onChange, the merge of the
// new map, has returned: operators release an address on that count.
func TestFileSourceCountsSuccessAfterTheMerge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.json")
	replaceFile(t, path, `[{"prefixes": ["10.0.0.1"], "id": "a"}]`)
	var counts reloadCounter
	src := NewFileSource(path, 10*time.Millisecond, owners.DefaultLimits(), zap.NewNop(), counts.record)
	src.settle = func() {} // nothing writes the file meanwhile
	merging := make(chan int, 1)
	require.NoError(t, src.Start(context.Background(), func() { merging <- counts.get()[ReloadSuccess] }))
	defer func() { require.NoError(t, src.Shutdown()) }()
	replaceFile(t, path, `[{"prefixes": ["10.0.0.1"], "id": "b"}]`)
	assert.Equal(t, 1, <-merging, "only the load at Start counted while the poll's merge runs")
	require.Eventually(t, func() bool { return counts.get()[ReloadSuccess] == 2 }, 5*time.Second, 5*time.Millisecond)
}

func FuzzParseFile(f *testing.F) {
	for _, seed := range []string{
		"- {prefixes: [10.0.0.1], id: a}\n",
		"- prefixes: [10.0.1.0/24]\n  id: pool\n  attributes: {service.name: batch, k8s.namespace.name: shop}\n",
		`[{"prefixes": ["::ffff:10.0.0.2", "2001:db8::/32"], "id": "c"}]`,
		"[]",
		"",
		"- {prefixes: [10.0.0.1], id: a, attributes: {b: 1, b: 2}}\n",
		"- &x {prefixes: [10.0.0.1], id: a}\n- *x\n",
		"- {? [a] : b}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseFile(data, owners.DefaultLimits())
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
			if err := owners.DefaultLimits().Check(o); err != nil {
				t.Fatalf("accepted an owner beyond the limits for %s: %v", p, err)
			}
			for _, a := range o.Attributes {
				if owners.CheckAttributeName(a.Name) != nil {
					t.Fatalf("accepted attribute name %q for %s", a.Name, p)
				}
			}
		}
	})
}
