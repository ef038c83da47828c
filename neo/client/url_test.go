package client

import (
	"net/url"
	"slices"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url     string
		cluster string
		masters []string
		ro      bool
		nocomp  bool
		bad     bool
	}{
		{url: "neo://db@127.0.0.1:2051", cluster: "db", masters: []string{"127.0.0.1:2051"}},
		{url: "neo://db@m1:1,m2:2", cluster: "db", masters: []string{"m1:1", "m2:2"}},
		{url: "neo://db@[::1]:3", cluster: "db", masters: []string{"[::1]:3"}},
		{url: "neo://db@m1:1?read_only=true&compress=false", cluster: "db", masters: []string{"m1:1"}, ro: true, nocomp: true},
		{url: "neo://m1:1", bad: true},                    // no cluster name
		{url: "neo://db@", bad: true},                     // no master
		{url: "neo://db@m1:1?read_only=maybe", bad: true}, // not a boolean
		{url: "neo://db@m1:1?ca=x", bad: true},            // TLS needs the three files
		{url: "zeo://db@m1:1", bad: true},
		{url: "neo://db@m1:1?read_timeout=soon", bad: true},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := ParseURL(u)
		if tc.bad {
			if err == nil {
				t.Errorf("%s: no error", tc.url)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if cfg.Cluster != tc.cluster || !slices.Equal(cfg.Masters, tc.masters) || cfg.ReadOnly != tc.ro || cfg.NoCompress != tc.nocomp {
			t.Errorf("%s: got %+v", tc.url, cfg)
		}
	}
}

func TestCompressInflate(t *testing.T) {
	c := &Client{}
	data := []byte("some data some data some data some data some data some data")
	comp, out := c.compress(data)
	if comp != 1 || len(out) >= len(data) {
		t.Fatalf("compress: flag %d, %d bytes of %d", comp, len(out), len(data))
	}
	back, err := inflate(comp, out)
	if err != nil || string(back) != string(data) {
		t.Fatalf("inflate: %q %v", back, err)
	}
	if comp, out := c.compress([]byte("short")); comp != 0 || string(out) != "short" {
		t.Errorf("short data compressed: %d %q", comp, out)
	}
	if _, err := inflate(1, []byte("not zlib")); err == nil {
		t.Errorf("inflate of garbage: no error")
	}
	if _, err := inflate(2, nil); err == nil {
		t.Errorf("unknown compression: no error")
	}
}

// FuzzInflate: whatever a storage sends as compressed data, inflate
// returns data or an error, never panics.
func FuzzInflate(f *testing.F) {
	c := &Client{}
	_, z := c.compress([]byte("some data some data some data some data some data"))
	f.Add(uint8(1), z)
	f.Add(uint8(0), []byte("raw"))
	f.Add(uint8(1), []byte{0x78, 0x9c, 0xff})
	f.Fuzz(func(t *testing.T, compression uint8, data []byte) {
		out, err := inflate(compression, data)
		if err == nil && compression == 0 && string(out) != string(data) {
			t.Fatalf("raw data changed")
		}
	})
}
