// Package wks registers the well-known storage drivers: importing it (for
// its side effect) makes zodb.Open understand "file://" (and plain paths),
// "mem://", "zeo://" and "neo://" URLs.
//
//	import _ "github.com/neozodb/neo/zodb/wks"
package wks

import (
	_ "github.com/neozodb/neo/neo/client"       // neo://
	_ "github.com/neozodb/neo/zodb/storage/fs1" // file://, plain paths
	_ "github.com/neozodb/neo/zodb/storage/mem" // mem://
	_ "github.com/neozodb/neo/zodb/storage/zeo" // zeo://
)
