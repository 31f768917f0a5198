// goapply applies one layer with containerd's own archive package, so the Rust tests can
// compare stowage's apply with containerd's on the same input.
//
// Usage: goapply plain|overlay LAYER ROOT [PARENT...]
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/archive"
	"github.com/containerd/containerd/archive/compression"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: goapply plain|overlay LAYER ROOT [PARENT...]")
		os.Exit(2)
	}
	mode, layer, root, parents := os.Args[1], os.Args[2], os.Args[3], os.Args[4:]
	f, err := os.Open(layer)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	r, err := compression.DecompressStream(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer r.Close()
	var opts []archive.ApplyOpt
	if mode == "overlay" {
		opts = append(opts, archive.WithConvertWhiteout(archive.OverlayConvertWhiteout))
		if len(parents) > 0 {
			opts = append(opts, archive.WithParents(parents))
		}
	}
	if _, err := archive.Apply(context.Background(), root, r, opts...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
