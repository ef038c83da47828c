// Package testdir locates test data for golden tests.
//
// Golden tests read their data from a directory named by an environment
// variable, so that any directory laid out the same way can be checked; by
// default they use the copy kept in the module's testdata/ folder.
package testdir

import (
	"os"
	"path/filepath"
)

// ModuleRoot returns the directory holding go.mod, searching upwards from the
// working directory (go test runs in the package's directory).
func ModuleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("testdir: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Dir returns $env if set, else testdata/<rel> under the module root.
func Dir(env, rel string) string {
	if d := os.Getenv(env); d != "" {
		return d
	}
	return filepath.Join(ModuleRoot(), "testdata", rel)
}

// Shared returns a folder of the shared test data that sits beside the
// project's checkout (../shared/testdata/<rel> from the module root), and
// whether it exists. Data that the project does not copy is used from there.
func Shared(rel string) (string, bool) {
	d := filepath.Join(filepath.Dir(ModuleRoot()), "shared", "testdata", rel)
	st, err := os.Stat(d)
	return d, err == nil && st.IsDir()
}
