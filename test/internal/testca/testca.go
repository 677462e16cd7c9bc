// Package testca makes throwaway certificate authorities and certificates
// for tests of collectors talking mutual TLS.
package testca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a throwaway certificate authority made for one test; its keys
// live in the test's temporary directory only.
type CA struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// File is the CA certificate in PEM, for ca_file / client_ca_file.
	File string
}

// New makes a CA named name.
func New(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err, "CA key")
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err, "CA certificate")
	cert, err := x509.ParseCertificate(der)
	must(t, err, "parsing CA certificate")
	ca := &CA{dir: t.TempDir(), cert: cert, key: key}
	ca.File = ca.writePEM(t, name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *CA) writePEM(t testing.TB, name, kind string, der []byte) string {
	t.Helper()
	p := filepath.Join(ca.dir, name)
	must(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600), "writing %s", p)
	return p
}

// Leaf is a certificate for one collector or peer, usable as TLS server and
// client (a node both receives and sends claims).
type Leaf struct {
	CertFile, KeyFile string
	pair              tls.Certificate
}

// Issue makes a certificate for name (CommonName and DNS SAN) and ips.
func (ca *CA) Issue(t testing.TB, name string, ips ...net.IP) Leaf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err, "key for %s", name)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	must(t, err, "serial")
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	must(t, err, "certificate for %s", name)
	keyDER, err := x509.MarshalECPrivateKey(key)
	must(t, err, "marshal key")
	l := Leaf{
		CertFile: ca.writePEM(t, name+"-cert.pem", "CERTIFICATE", der),
		KeyFile:  ca.writePEM(t, name+"-key.pem", "EC PRIVATE KEY", keyDER),
	}
	l.pair, err = tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
	must(t, err, "loading key pair of %s", name)
	return l
}

// ClientTLS is the TLS configuration of a test client presenting l (none
// when l is the zero Leaf) to a server on 127.0.0.1 whose certificate ca
// signed.
func (ca *CA) ClientTLS(l Leaf) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if l.pair.Certificate != nil {
		cfg.Certificates = []tls.Certificate{l.pair}
	}
	return cfg
}

func must(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}
