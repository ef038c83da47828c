package cluster_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/cluster"
	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/zodb"
)

// testPKI writes a CA and one node certificate signed by it (NEO checks
// the chain, not host names) and returns the three files.
func testPKI(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	nodeKey := newKey()
	nodeTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	nodeDER, err := x509.CreateCertificate(rand.Reader, nodeTmpl, ca, &nodeKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	return write("ca.crt", "CERTIFICATE", caDER), write("node.crt", "CERTIFICATE", nodeDER), write("node.key", "EC PRIVATE KEY", keyDER)
}

// TestTLS: a cluster whose links all use TLS, opened by URL with the ca,
// cert and key options.
func TestTLS(t *testing.T) {
	caFile, certFile, keyFile := testPKI(t)
	conf, err := neonet.LoadTLSConfig(caFile, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	c := cluster.Start(t, cluster.Options{Storages: 1, TLS: conf})
	q := url.Values{"ca": {caFile}, "cert": {certFile}, "key": {keyFile}}
	stor, err := zodb.Open(t.Context(), c.TestURL("C1", q.Encode()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stor.Close()
	oid, err := stor.NewOid(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tid := commit(t, stor, oid, 0, "over TLS")
	data, serial, _, err := stor.Load(t.Context(), zodb.Xid{Oid: oid, At: zodb.TidMax})
	if err != nil || string(data) != "over TLS" || serial != tid {
		t.Fatalf("load: %q at %v: %v", data, serial, err)
	}
	// A client without TLS is not let in.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if s, err := zodb.Open(ctx, c.URL(), nil); err == nil {
		s.Close()
		t.Fatal("plain-text client connected to a TLS cluster")
	}
}
