package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeTLSFiles writes a throwaway CA and one node certificate signed by
// it (shared by every node and client, as NEO setups often do) and returns
// the paths of the CA, certificate and key files.
func writeTLSFiles(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	nodeKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nodeTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	nodeDER, err := x509.CreateCertificate(rand.Reader, nodeTmpl, caCert, &nodeKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.crt", "CERTIFICATE", caDER), write("node.crt", "CERTIFICATE", nodeDER), write("node.key", "EC PRIVATE KEY", keyDER)
}

// TestSimpleTLS runs neo simple with TLS between all nodes: the URL it
// prints carries the files, the Go client commits and reads through it,
// and neoctl talks to the admin with the same files.
func TestSimpleTLS(t *testing.T) {
	ca, cert, key := writeTLSFiles(t)
	adminAddr := freeAddr(t, "127.0.0.1")
	p, url, _ := simpleProc(t, "neo-simple-tls", "--cluster", "tls", "--data", t.TempDir(), "--admin", adminAddr,
		"--ca", ca, "--cert", cert, "--key", key, "s1")
	if !strings.HasPrefix(url, "neo://tls@127.0.0.1:") || !strings.Contains(url, "?ca=") {
		t.Fatalf("URL %q: want neo://tls@127.0.0.1:PORT?ca=...&cert=...&key=...", url)
	}
	objs := objects{}
	commitObjects(t, url, objs, 10, "over TLS")
	checkObjects(t, url, objs)
	// neoctl with the TLS files, and without.
	out, err := ctlRun(t, adminAddr, "--ca", ca, "--cert="+cert, "--key", key, "print", "cluster")
	if err != nil || strings.TrimSpace(out) != "RUNNING" {
		t.Errorf("neoctl over TLS: %q, %v", out, err)
	}
	if out, err := ctlRun(t, adminAddr, "print", "cluster"); err == nil {
		t.Errorf("neoctl without TLS got an answer: %q", out)
	}
	p.stopWith(syscall.SIGTERM)
}
