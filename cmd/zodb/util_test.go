package main

import (
	"crypto/sha1"
	"sort"
)

func sha1sum(b []byte) [20]byte { return sha1.Sum(b) }

func sortedCopy(v []string) []string {
	w := append([]string(nil), v...)
	sort.Strings(w)
	return w
}
