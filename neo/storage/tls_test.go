package storage

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// tlsForTest makes a CA and a node certificate signed by it, and returns
// the TLS configuration every node of a test uses.
func tlsForTest(t *testing.T) *tls.Config {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	start := time.Now().Add(-time.Minute)
	ca := &x509.Certificate{SerialNumber: big.NewInt(10), Subject: pkix.Name{CommonName: "storage test CA"},
		NotBefore: start, NotAfter: start.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caKey := key()
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(11), Subject: pkix.Name{CommonName: "storage test node"},
		NotBefore: start, NotAfter: start.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	leafKey := key()
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := neonet.TLSConfig(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// TestTLS: the node speaks TLS with the master and its clients, and
// refuses plain connections.
func TestTLS(t *testing.T) {
	ctx := timeout(t)
	conf := tlsForTest(t)
	fm := newFakeMasterTLS(t, conf)
	n := startNode(t, fm, dbPath(t, "s1.db"), proto.NoNode)
	ml := operational(ctx, t, fm, s1, n, []proto.NodeInfo{
		storageEntry(s1, n.s.Addr(), proto.NodeRunning, 1), clientEntry(c1, 2)},
		np, proto.CellInfo{NID: s1, State: proto.CellUpToDate})
	c := dialClientTLS(ctx, t, n.s.Addr(), c1, 2, conf)
	commit(ctx, t, c, ml, 0x100, 0x104, nil, map[zodb.Oid]string{7: "secret"})
	checkObject(t, load(ctx, t, c, 7, zodb.InvalidTid, zodb.InvalidTid), 0x104, zodb.InvalidTid, "secret")

	conn, err := net.Dial("tcp", n.s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(proto.Handshake); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("plain connection answered %x", buf[:n])
	}
}
