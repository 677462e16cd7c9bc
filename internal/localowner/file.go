package localowner // import "github.com/flowattr/flowattr/internal/localowner"

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/flowattr/flowattr/internal/owners"
)

// maxFileSize bounds what one reload reads, so that a runaway writer
// cannot exhaust memory: parsing builds a YAML node tree first, which
// takes about 35 bytes of transient heap per byte of a typical file and
// up to about 130 for one of short tokens (a list of single digits). A MiB
// holds about 10,000 entries of one address each.
const maxFileSize = 1 << 20

// ParseFile parses an ownership file: a YAML (or JSON, a subset of YAML)
// list of entries, each an owner and its addresses or CIDR prefixes, in the
// shape of owners.Entry:
//
//	# written by the IPAM agent
//	- prefixes: [10.0.1.7]
//	  id: checkout-7f9c
//	- prefixes: [10.0.2.0/24, 2001:db8::/64]
//	  id: batch-pool
//	  attributes: {service.name: batch}
//
// Parsing is strict: an unknown or repeated field is an error, and so are
// a prefix that two entries name (IPv4-mapped IPv6 is unmapped first, so
// ::ffff:10.0.0.3 and 10.0.0.3 are one) and an owner beyond limits. An
// empty document is an error too, more likely a file caught mid-write than
// a deliberately empty list ([]). Errors name the entry by its index and
// line.
func ParseFile(data []byte, limits owners.Limits) (map[netip.Prefix]owners.Owner, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("file is empty; write [] for an empty list")
	}
	root := doc.Content[0]
	if root.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("line %d: top level must be a list of entries with prefixes, id and attributes", root.Line)
	}
	out := make(map[netip.Prefix]owners.Owner, len(root.Content))
	first := make(map[netip.Prefix]int, len(root.Content))
	for i, n := range root.Content {
		at := fmt.Sprintf("entries[%d] (line %d)", i, n.Line)
		e, err := decodeEntry(n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		o, err := e.Owner(limits)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		ps, err := e.ParsedPrefixes()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		for _, p := range ps {
			if j, dup := first[p]; dup {
				return nil, fmt.Errorf("%s: prefixes: %s is already in entries[%d] (line %d); give each address or prefix one owner",
					at, p, j, root.Content[j].Line)
			}
			first[p] = i
			out[p] = o
		}
	}
	return out, nil
}

// decodeEntry decodes one entry of an ownership file, strictly: a mapping
// of the fields of owners.Entry only, each given once.
func decodeEntry(n *yaml.Node) (owners.Entry, error) {
	var e owners.Entry
	if n.Kind != yaml.MappingNode {
		return e, errors.New("must be a mapping with prefixes, id and attributes")
	}
	for i := 0; i < len(n.Content); i += 2 {
		switch k := n.Content[i]; k.Value {
		case "prefixes", "id", "attributes":
		default:
			return e, fmt.Errorf("line %d: unknown field %q (want prefixes, id, attributes)", k.Line, k.Value)
		}
	}
	if err := n.Decode(&e); err != nil {
		// A yaml.TypeError lists one problem per line.
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return e, errors.New(strings.Join(te.Errors, "; "))
		}
		return e, err
	}
	return e, nil
}

// Results of an ownership file load, passed to FileSource's recordReload:
// the "result" attribute of the receiver's ebpfflow_ownership_file_reloads.
const (
	// ReloadSuccess: new content in use by the merged map.
	ReloadSuccess = "success"
	// ReloadError: the file is missing, unreadable, too large or invalid
	// (an owner beyond the limits, among others); the last good map stays
	// in use.
	ReloadError = "error"
	// ReloadDeferred: new content that changed again within 100ms of being
	// read, left for the next poll.
	ReloadDeferred = "deferred"
)

// FileSource is an ownership map that another program writes to a file. It is
// polled rather than watched: polling sees atomic rename-replace, edits in
// place and files on any filesystem alike, and a poll costs one read of a
// small file. New content is loaded only if it stays the same for 100ms.
// A file that cannot be read or parsed leaves the last good map in use; the
// failure is logged and counted once per distinct content.
type FileSource struct {
	path     string
	interval time.Duration
	limits   owners.Limits
	logger   *zap.Logger
	// recordReload counts a load by result.
	recordReload func(result string)
	// settle waits between the two reads of new content: fileSettle.
	settle func()

	mu      sync.RWMutex
	entries map[netip.Prefix]owners.Owner

	// Reload state, used by one goroutine at a time (Start, then the poller):
	// digests of the content in use and of the last content that failed to
	// parse, and the last read error, so each failure is counted once.
	goodDigest, badDigest [sha256.Size]byte
	lastReadErr           string

	poll poller
}

// NewFileSource returns the source of the ownership file at path, polled
// every pollInterval once started. A file with an owner beyond limits does
// not load. recordReload counts each load by result (ReloadSuccess,
// ReloadError, ReloadDeferred).
func NewFileSource(path string, pollInterval time.Duration, limits owners.Limits, logger *zap.Logger, recordReload func(result string)) *FileSource {
	return &FileSource{
		path:         path,
		interval:     pollInterval,
		limits:       limits,
		logger:       logger.With(zap.String("path", path)),
		recordReload: recordReload,
		settle:       func() { time.Sleep(fileSettle) },
		entries:      map[netip.Prefix]owners.Owner{},
	}
}

// Entries implements Source.
func (s *FileSource) Entries() map[netip.Prefix]owners.Owner {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.entries
}

// Start implements Source: it loads the file once, waiting 100ms if it is
// there, and polls it. A file that is missing or bad at start does not fail
// Start: orchestrators often write it after the agents start. Flows then
// carry no owner from this source until it loads. A load counts as a
// success once onChange has returned, the merged map using it: operators
// wait for that count before they give a removed address to another host
// (docs/deployment.md).
func (s *FileSource) Start(_ context.Context, onChange func()) error {
	if s.reload() {
		s.recordReload(ReloadSuccess) // Ownership merges it before capturing
	}
	s.poll.start(s.interval, s.reload, func() {
		onChange()
		s.recordReload(ReloadSuccess)
	})
	return nil
}

// Shutdown implements Source.
func (s *FileSource) Shutdown() error {
	s.poll.shutdown()
	return nil
}

// fileSettle is how long new content must stay the same to be loaded. An
// edit in place caught midway often parses (a YAML list cut short is a
// shorter list, an owner ID cut short another owner's), so a poll that reads new
// content reads the file again fileSettle later and loads it only if both
// reads are the same; otherwise it waits for the next poll. Comparing content
// rather than modification times holds on filesystems with coarse times,
// with a writer whose clock is ahead, and for files whose size is not their
// content's (procfs, some FUSE filesystems).
const fileSettle = 100 * time.Millisecond

// reload reads the file and, when its content changed, stayed the same for
// fileSettle and parses, replaces the map. It reports whether the map
// changed, and counts every other outcome; Start counts successes.
func (s *FileSource) reload() bool {
	data, err := readLimited(s.path, maxFileSize)
	if err != nil {
		// A file missing for an hour is one warning, not one per poll.
		if msg := err.Error(); msg != s.lastReadErr {
			s.lastReadErr = msg
			s.fail(err)
		}
		return false
	}
	s.lastReadErr = ""
	digest := sha256.Sum256(data)
	if digest == s.goodDigest || digest == s.badDigest {
		return false
	}
	s.settle()
	if again, err := readLimited(s.path, maxFileSize); err != nil || !bytes.Equal(again, data) {
		s.recordReload(ReloadDeferred)
		s.logger.Debug("Ownership file is changing; loading it at the next poll")
		return false
	}
	entries, err := ParseFile(data, s.limits)
	if err != nil {
		s.badDigest = digest
		s.fail(err)
		return false
	}
	s.goodDigest = digest
	s.mu.Lock()
	s.entries = entries
	s.mu.Unlock()
	s.logger.Info("Loaded ownership file", zap.Int("entries", len(entries)))
	return true
}

func (s *FileSource) fail(err error) {
	s.recordReload(ReloadError)
	s.mu.RLock()
	n := len(s.entries)
	s.mu.RUnlock()
	s.logger.Warn("Cannot load ownership file; keeping the last good map", zap.Error(err), zap.Int("entries_kept", n))
}

// readLimited reads the file at path, of at most limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(f, limit+1)); err != nil {
		return nil, err
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("file is larger than %d bytes", limit)
	}
	return buf.Bytes(), nil
}
