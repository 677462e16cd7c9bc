package kube

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// cutProxy forwards TCP connections to the API server until the test cuts
// it: then it closes every connection it carries and refuses new ones,
// until restored. The collector sees the API server go away and come back
// with the same certificates (restarting envtest's API server would make
// new ones).
type cutProxy struct {
	l  net.Listener
	to string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// startCutProxy accepts on l and forwards to the address to, dialed from
// the test's own network namespace, until the test ends.
func startCutProxy(t *testing.T, l net.Listener, to string) *cutProxy {
	t.Helper()
	p := &cutProxy{l: l, to: to, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = l.Close()
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

// setCut cuts the proxy (closing what it carries) or restores it.
func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	}
}

// track registers c, or closes it and reports false when the proxy is cut.
func (p *cutProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		down, err := p.l.Accept()
		if err != nil {
			return
		}
		if !p.track(down) {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			up, err := net.Dial("tcp", p.to)
			if err != nil {
				_ = down.Close()
				return
			}
			if !p.track(up) {
				_ = down.Close()
				return
			}
			var pipes sync.WaitGroup
			pipes.Go(func() { pipe(up, down) })
			pipes.Go(func() { pipe(down, up) })
			pipes.Wait()
		}()
	}
}

// pipe copies from src to dst and closes both when either side ends.
func pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

// throughProxy returns a copy of the kubeconfig at path whose server is p.
func throughProxy(t *testing.T, path string, p *cutProxy) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range cfg.Clusters {
		u, err := url.Parse(cl.Server)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = p.l.Addr().String()
		cl.Server = u.String()
	}
	out := filepath.Join(t.TempDir(), "kubeconfig-proxied")
	if err := clientcmd.WriteToFile(*cfg, out); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(out, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}
