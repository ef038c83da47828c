module github.com/neozodb/neo

go 1.26

require (
	github.com/kisielk/og-rek v1.3.0
	github.com/tinylib/msgp v1.6.5
)

require (
	github.com/aristanetworks/gomap v0.0.0-20230726210543-f4e41046dced // indirect
	github.com/philhofer/fwd v1.2.0 // indirect
	golang.org/x/exp v0.0.0-20230725093048-515e97ebf090 // indirect
)
