package main

// The storage drivers neo bench and neo demo open URLs with.
import (
	_ "github.com/neozodb/neo/neo/client" // neo://
	_ "github.com/neozodb/neo/zodb/wks"   // file://, mem://
)
