// Reads (and optionally first writes) a snapshotter root with containerd 1.6's own Go
// snapshotter code and prints what it sees as JSON, for stowage's compatibility tests.
//
// usage: gocheck dump|populate overlayfs|native <root>
//        gocheck bench overlayfs|native <root> <iterations>
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/native"
	"github.com/containerd/containerd/snapshots/overlay"
)

type jsonMount struct {
	Type    string   `json:"type"`
	Source  string   `json:"source"`
	Options []string `json:"options"`
}

type row struct {
	Name    string            `json:"name"`
	Parent  string            `json:"parent"`
	Kind    string            `json:"kind"`
	Labels  map[string]string `json:"labels"`
	Inodes  int64             `json:"inodes"`
	Size    int64             `json:"size"`
	Created int64             `json:"created"`
	Updated int64             `json:"updated"`
	Mounts  []jsonMount       `json:"mounts"`
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// writeInto puts a file into the writable directory of an active snapshot's mounts.
func writeInto(ms []mount.Mount, name, data string) {
	dir := ms[0].Source
	for _, o := range ms[0].Options {
		if strings.HasPrefix(o, "upperdir=") {
			dir = strings.TrimPrefix(o, "upperdir=")
		}
	}
	check(os.WriteFile(filepath.Join(dir, name), []byte(data), 0644))
}

func populate(ctx context.Context, sn snapshots.Snapshotter) {
	ms, err := sn.Prepare(ctx, "go-a", "", snapshots.WithLabels(map[string]string{"x": "1"}))
	check(err)
	writeInto(ms, "base", strings.Repeat("b", 10000))
	check(sn.Commit(ctx, "go-c1", "go-a", snapshots.WithLabels(map[string]string{"y": "2", "containerd.io/gc.root": "now"})))
	ms, err = sn.Prepare(ctx, "go-b", "go-c1")
	check(err)
	writeInto(ms, "second", "two")
	check(sn.Commit(ctx, "go-c2", "go-b"))
	ms, err = sn.Prepare(ctx, "go-active", "go-c2", snapshots.WithLabels(map[string]string{"z": "3"}))
	check(err)
	writeInto(ms, "third", "three")
	_, err = sn.View(ctx, "go-view1", "go-c1")
	check(err)
	_, err = sn.View(ctx, "go-view2", "go-c2")
	check(err)
	_, err = sn.Update(ctx, snapshots.Info{Name: "go-c2", Labels: map[string]string{"u": "updated"}}, "labels.u")
	check(err)
}

func median(d []int64) int64 {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}

// bench times prepare, commit and remove of empty snapshots, and prepare of a view on a
// committed parent, and prints the median of each in nanoseconds.
func bench(ctx context.Context, sn snapshots.Snapshotter, n int) {
	var prep, commit, rm, view []int64
	_, err := sn.Prepare(ctx, "parent-a", "")
	check(err)
	check(sn.Commit(ctx, "parent", "parent-a"))
	for i := 0; i < n; i++ {
		key, name, v := fmt.Sprintf("a%d", i), fmt.Sprintf("c%d", i), fmt.Sprintf("v%d", i)
		t := time.Now()
		_, err := sn.Prepare(ctx, key, "")
		check(err)
		prep = append(prep, int64(time.Since(t)))
		t = time.Now()
		check(sn.Commit(ctx, name, key))
		commit = append(commit, int64(time.Since(t)))
		t = time.Now()
		check(sn.Remove(ctx, name))
		rm = append(rm, int64(time.Since(t)))
		t = time.Now()
		_, err = sn.View(ctx, v, "parent")
		check(err)
		view = append(view, int64(time.Since(t)))
		check(sn.Remove(ctx, v))
	}
	b, err := json.Marshal(map[string]int64{"prepare": median(prep), "commit": median(commit), "remove": median(rm), "view": median(view)})
	check(err)
	fmt.Println(string(b))
}

func main() {
	ctx := context.Background()
	var sn snapshots.Snapshotter
	var err error
	switch os.Args[2] {
	case "overlayfs":
		sn, err = overlay.NewSnapshotter(os.Args[3])
	case "native":
		sn, err = native.NewSnapshotter(os.Args[3])
	default:
		err = fmt.Errorf("unknown snapshotter %q", os.Args[2])
	}
	check(err)
	defer sn.Close()
	if os.Args[1] == "bench" {
		n, err := strconv.Atoi(os.Args[4])
		check(err)
		bench(ctx, sn, n)
		return
	}
	if os.Args[1] == "populate" {
		populate(ctx, sn)
	}
	out := []row{}
	check(sn.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		u, err := sn.Usage(ctx, info.Name)
		if err != nil {
			return err
		}
		r := row{Name: info.Name, Parent: info.Parent, Kind: info.Kind.String(), Labels: info.Labels,
			Inodes: u.Inodes, Size: u.Size, Created: info.Created.UnixNano(), Updated: info.Updated.UnixNano()}
		if info.Kind != snapshots.KindCommitted {
			ms, err := sn.Mounts(ctx, info.Name)
			if err != nil {
				return err
			}
			for _, m := range ms {
				r.Mounts = append(r.Mounts, jsonMount{m.Type, m.Source, m.Options})
			}
		}
		out = append(out, r)
		return nil
	}))
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	b, err := json.Marshal(out)
	check(err)
	fmt.Println(string(b))
}
