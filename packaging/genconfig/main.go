// Command genconfig prints the configuration file the package ships as
// /etc/gopulse/gopulse.yaml (config.Template), for packaging/build-deb.
package main

import (
	"os"

	"github.com/gopulse/gopulse/daemon/config"
)

func main() {
	if _, err := os.Stdout.Write(config.Template()); err != nil {
		os.Exit(1)
	}
}
