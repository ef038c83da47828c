package neonet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pem    []byte
	serial int64
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, serial: 1,
		pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// newNodeCert returns a node certificate and key (PEM) signed by ca, and the
// certificate's serial number.
func (ca *testCA) newNodeCert(t testing.TB, name string) (certPEM, keyPEM []byte, serial *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	serial = big.NewInt(ca.serial)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), serial
}

// crl returns a PEM CRL of ca revoking the given serial numbers.
func (ca *testCA) crl(t testing.TB, revoked ...*big.Int) []byte {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(1),
		ThisUpdate:                time.Now().Add(-time.Minute),
		NextUpdate:                time.Now().Add(time.Hour),
		RevokedCertificateEntries: entries,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// testTLS is the TLS setup of one test node.
type testTLS struct {
	conf *tls.Config
}

func (tt *testTLS) config() *tls.Config {
	if tt == nil {
		return nil
	}
	return tt.conf
}

// node returns the TLS setup of a node trusting caPEM, with a certificate
// signed by signer.
func node(t testing.TB, caPEM []byte, signer *testCA, name string) *testTLS {
	t.Helper()
	cert, key, _ := signer.newNodeCert(t, name)
	conf, err := TLSConfig(caPEM, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return &testTLS{conf}
}

func TestTLS(t *testing.T) {
	ctx := testCtx(t)
	ca := newTestCA(t, "cluster CA")
	c, s := pairTLS(t, node(t, ca.pem, ca, "client"), node(t, ca.pem, ca, "storage"))
	serve(t, s, func(r *Request) { r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 5}) })
	a, err := c.Ask(ctx, &proto.AskLastTransaction{})
	if err != nil || a.(*proto.AnswerLastTransaction).Tid != 5 {
		t.Fatalf("got %v, %v", a, err)
	}
	for _, l := range []*Link{c, s} {
		tc, ok := l.conn.(*tls.Conn)
		if !ok {
			t.Fatalf("link %s is not over TLS", l)
		}
		st := tc.ConnectionState()
		if st.Version < tls.VersionTLS12 || len(st.PeerCertificates) == 0 {
			t.Fatalf("link %s: TLS version %x, %d peer certificates", l, st.Version, len(st.PeerCertificates))
		}
	}
}

// dialRejected dials a listener and returns the error of Dial and the one
// the listener reported.
func dialRejected(t *testing.T, client, server *tls.Config) (dialErr, rejectErr error) {
	t.Helper()
	ctx := testCtx(t)
	rejected := make(chan error, 1)
	lc := ListenConfig{TLS: server, OnReject: func(_ net.Addr, err error) { rejected <- err }}
	ln, err := lc.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l, dialErr := Dial(ctx, ln.Addr().String(), client)
	if dialErr == nil {
		// With TLS 1.3 the client may finish its handshake before the
		// server refuses its certificate; the link then dies at once.
		<-l.Done()
		dialErr = l.Err()
		l.Close()
	}
	return dialErr, <-rejected
}

func TestTLSRejections(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	other := newTestCA(t, "other CA")
	good := node(t, ca.pem, ca, "good")
	revokedCert, revokedKey, revokedSerial := ca.newNodeCert(t, "revoked")
	revoked, err := TLSConfig(ca.pem, revokedCert, revokedKey)
	if err != nil {
		t.Fatal(err)
	}
	serverCert, serverKey, _ := ca.newNodeCert(t, "server")
	withCRL, err := TLSConfig(append(append([]byte(nil), ca.pem...), ca.crl(t, revokedSerial)...), serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name           string
		client, server *tls.Config
		wantReject     string // in the listener's error
	}{
		{"client cert from another CA", node(t, ca.pem, other, "intruder").conf, good.conf, "certificate"},
		{"server cert from another CA", good.conf, node(t, ca.pem, other, "impostor").conf, "TLS handshake"},
		{"client trusts another CA", node(t, other.pem, ca, "lost").conf, good.conf, "TLS handshake"},
		{"revoked client", revoked, withCRL, "revoked"},
		{"plain text client", nil, good.conf, ErrNotTLS.Error()},
		{"TLS client, plain text server", good.conf, nil, "not a NEO node"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dialErr, rejectErr := dialRejected(t, tt.client, tt.server)
			if dialErr == nil {
				t.Fatal("dial succeeded")
			}
			if rejectErr == nil || !strings.Contains(rejectErr.Error(), tt.wantReject) {
				t.Fatalf("listener: %v, want %q", rejectErr, tt.wantReject)
			}
			t.Logf("dial: %v; listener: %v", dialErr, rejectErr)
		})
	}
}

func TestTLSConfigErrors(t *testing.T) {
	ca := newTestCA(t, "CA")
	other := newTestCA(t, "other")
	cert, key, _ := ca.newNodeCert(t, "n")
	if _, err := TLSConfig([]byte("junk"), cert, key); err == nil {
		t.Error("CA file without certificates accepted")
	}
	if _, err := TLSConfig(ca.pem, cert, []byte("junk")); err == nil {
		t.Error("bad key accepted")
	}
	foreignCRL := append(append([]byte(nil), ca.pem...), other.crl(t)...)
	if _, err := TLSConfig(foreignCRL, cert, key); err == nil || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("CRL of an unknown CA: %v", err)
	}
}

// Abort over TLS: the answer arrives, then the link closes cleanly.
func TestTLSAbort(t *testing.T) {
	ctx := testCtx(t)
	ca := newTestCA(t, "cluster CA")
	c, s := pairTLS(t, node(t, ca.pem, ca, "client"), node(t, ca.pem, ca, "master"))
	serve(t, s, func(r *Request) {
		r.Abort(ctx, &proto.Error{Code: proto.ProtocolError, Message: "invalid cluster name"})
	})
	_, err := c.Ask(ctx, &proto.AskLastTransaction{})
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.ProtocolError {
		t.Fatalf("got %v, want PROTOCOL_ERROR", err)
	}
	<-c.Done()
	if !errors.Is(c.Err(), ErrPeerClosed) {
		t.Fatalf("client link: %v, want ErrPeerClosed", c.Err())
	}
}
