package neonet

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// TLSConfig returns the TLS configuration of a NEO node from the contents
// of its ca, cert and key files (PEM), for use on both sides of links
// (Dial, Listen), as NEO/py configures TLS:
//
//   - TLS 1.2 at least (NEO/py itself speaks TLS 1.2 only, which Go
//     negotiates with it);
//   - certificates required on both sides (mutual authentication);
//   - the peer's certificate chain must lead to one of the CAs in ca;
//     there is no host name check;
//   - if ca holds CRLs (PEM "X509 CRL" blocks), a revoked peer certificate
//     is refused.
func TLSConfig(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate and key: %w", err)
	}
	pool := x509.NewCertPool()
	var crls []*x509.RevocationList
	var cas []*x509.Certificate
	for rest := caPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			ca, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("TLS CA: %w", err)
			}
			pool.AddCert(ca)
			cas = append(cas, ca)
		case "X509 CRL":
			crl, err := x509.ParseRevocationList(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("TLS CA file: CRL: %w", err)
			}
			crls = append(crls, crl)
		}
	}
	if len(cas) == 0 {
		return nil, errors.New("TLS CA: no certificate found")
	}
	for _, crl := range crls {
		if !crlSignedByOneOf(crl, cas) {
			return nil, fmt.Errorf("TLS CA file: CRL of %s is not signed by any of its CAs", crl.Issuer)
		}
	}
	verify := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		return verifyPeer(rawCerts, pool, crls)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// The chain is checked by verify on both sides: Go's own client
		// check would also want the peer's host name in its certificate,
		// which NEO does not do.
		InsecureSkipVerify:    true,
		ClientAuth:            tls.RequireAnyClientCert,
		ClientCAs:             pool, // only to tell clients which CAs we accept
		RootCAs:               pool,
		VerifyPeerCertificate: verify,
	}, nil
}

// LoadTLSConfig is TLSConfig reading the three files (NEO's ca, cert and
// key options).
func LoadTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	var pems [3][]byte
	for i, f := range []string{caFile, certFile, keyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		pems[i] = b
	}
	return TLSConfig(pems[0], pems[1], pems[2])
}

func crlSignedByOneOf(crl *x509.RevocationList, cas []*x509.Certificate) bool {
	for _, ca := range cas {
		if crl.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}

// verifyPeer checks the certificate chain a peer presented.
func verifyPeer(rawCerts [][]byte, roots *x509.CertPool, crls []*x509.RevocationList) error {
	if len(rawCerts) == 0 {
		return errors.New("peer sent no certificate")
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("peer certificate: %w", err)
	}
	for _, crl := range crls {
		if !bytes.Equal(crl.RawIssuer, leaf.RawIssuer) {
			continue
		}
		for _, rc := range crl.RevokedCertificateEntries {
			if rc.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				return fmt.Errorf("peer certificate %s (serial %s) is revoked", leaf.Subject, leaf.SerialNumber)
			}
		}
	}
	return nil
}

// enforceTLS returns a copy of c that refuses TLS versions older than 1.2.
func enforceTLS(c *tls.Config) *tls.Config {
	c = c.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}
