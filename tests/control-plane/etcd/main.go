// Command etcd is the upstream etcd server main, built from the published
// go.etcd.io/etcd/server/v3 module for routerpolicy's test control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
