package flowmapexporter // import "github.com/flowattr/flowattr/exporter/flowmapexporter"

import (
	"bytes"
	"compress/gzip"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flowattr/flowattr/internal/clock"
)

// web holds the page, its script and style, and the vendored graph
// library: the map works with no internet access.
//
//go:embed web
var web embed.FS

// maxGraphAge is how long one snapshot of the map answers /api/graph, at
// most: however many pages poll it, the flows wait for the aggregate's
// lock at most once per this long.
const maxGraphAge = time.Second

// newHandler serves the page at /, its files under /static/ and the map as
// JSON at /api/graph.
func newHandler(agg *aggregate, cfg *Config) http.Handler {
	static, err := fs.Sub(web, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	graphs := &graphCache{agg: agg, cfg: cfg, clock: agg.clock, maxAge: min(cfg.Refresh, maxGraphAge)}
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "index.html")
	})
	mux.HandleFunc("GET /api/graph", func(w http.ResponseWriter, r *http.Request) {
		body, gzipped, err := graphs.get()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			h.Set("Content-Encoding", "gzip")
			body = gzipped
		}
		_, _ = w.Write(body)
	})
	return loopbackHosts(cfg, securityHeaders(mux))
}

// graphCache holds the map's latest snapshot, encoded plain and gzipped,
// for maxAge of the clock: one snapshot serves every request meanwhile,
// and requests that find it stale wait for the one that rebuilds it.
type graphCache struct {
	agg    *aggregate
	cfg    *Config
	clock  clock.Clock
	maxAge time.Duration

	mu            sync.Mutex
	at            time.Time
	body, gzipped []byte
}

func (c *graphCache) get() (body, gzipped []byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.clock.Now(); c.body == nil || now.Sub(c.at) >= c.maxAge || now.Before(c.at) {
		if body, gzipped, err = c.encode(); err != nil {
			return nil, nil, err
		}
		c.body, c.gzipped, c.at = body, gzipped, now
	}
	return c.body, c.gzipped, nil
}

func (c *graphCache) encode() (body, gzipped []byte, err error) {
	start, end, nodes, edges := c.agg.snapshot()
	g := Graph{
		Start:          start,
		End:            end,
		WindowSeconds:  c.cfg.Window.Seconds(),
		RefreshSeconds: c.cfg.Refresh.Seconds(),
		NodeAttribute:  c.cfg.NodeAttribute,
		GroupBy:        c.cfg.GroupBy,
		MaxNodes:       c.cfg.MaxNodes,
		MaxEdges:       c.cfg.MaxEdges,
		Nodes:          nodes,
		Edges:          edges,
	}
	if g.Nodes == nil {
		g.Nodes = []Node{}
	}
	if g.Edges == nil {
		g.Edges = []Edge{}
	}
	var b, z bytes.Buffer
	enc := json.NewEncoder(&b)
	// Served as application/json with nosniff and read by the page as
	// text: escaping <, > and & would only make names of them six times
	// longer.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(g); err != nil {
		return nil, nil, fmt.Errorf("encoding the map: %w", err)
	}
	zw, err := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	if err != nil {
		return nil, nil, err
	}
	if _, err := zw.Write(b.Bytes()); err != nil {
		return nil, nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, nil, err
	}
	return b.Bytes(), z.Bytes(), nil
}

// acceptsGzip reports whether r's Accept-Encoding lists gzip with a
// weight above zero.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			q, ok := strings.CutPrefix(strings.TrimSpace(params), "q=")
			if !ok {
				return true
			}
			w, err := strconv.ParseFloat(q, 64)
			return err == nil && w > 0
		}
	}
	return false
}

// loopbackHosts answers only requests addressed to a loopback name when
// the map listens on loopback: otherwise a page of any site could point
// its own name at 127.0.0.1 (DNS rebinding) and read the map from the
// browser of whoever opens it on this host.
func loopbackHosts(cfg *Config, next http.Handler) http.Handler {
	host, _, err := net.SplitHostPort(cfg.ServerConfig.NetAddr.Endpoint)
	if err != nil || !isLoopbackName(host) {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			name = h
		}
		if !isLoopbackName(name) && !strings.EqualFold(name, host) {
			http.Error(w, fmt.Sprintf("the map listens on %s and answers requests to localhost, 127.0.0.1 or [::1] only, not to %q", cfg.ServerConfig.NetAddr.Endpoint, r.Host), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isLoopbackName reports whether host is localhost or a loopback address.
func isLoopbackName(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return err == nil && a.IsLoopback()
}

// securityHeaders keeps the page to its own files: no inline script, no
// other origin, not framed by another site.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}
