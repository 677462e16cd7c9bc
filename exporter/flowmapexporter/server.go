package flowmapexporter // import "github.com/flowattr/flowattr/exporter/flowmapexporter"

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
)

// web holds the page, its script and style, and the vendored graph
// library: the map works with no internet access.
//
//go:embed web
var web embed.FS

// newHandler serves the page at /, its files under /static/ and the map as
// JSON at /api/graph.
func newHandler(agg *aggregate, cfg *Config) http.Handler {
	static, err := fs.Sub(web, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "index.html")
	})
	mux.HandleFunc("GET /api/graph", func(w http.ResponseWriter, _ *http.Request) {
		start, end, nodes, edges := agg.snapshot()
		g := Graph{
			Start:          start,
			End:            end,
			WindowSeconds:  cfg.Window.Seconds(),
			RefreshSeconds: cfg.Refresh.Seconds(),
			NodeAttribute:  cfg.NodeAttribute,
			GroupBy:        cfg.GroupBy,
			MaxNodes:       cfg.MaxNodes,
			MaxEdges:       cfg.MaxEdges,
			Nodes:          nodes,
			Edges:          edges,
		}
		if g.Nodes == nil {
			g.Nodes = []Node{}
		}
		if g.Edges == nil {
			g.Edges = []Edge{}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(g)
	})
	return securityHeaders(mux)
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
