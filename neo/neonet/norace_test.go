//go:build !race

package neonet

const raceEnabled = false
