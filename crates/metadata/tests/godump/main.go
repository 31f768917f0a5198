// godump prints what containerd 1.6's own metadata package reads from a meta.db, one record
// per line, so tests can compare it with stowage's reading of the same file.
//
//	godump <meta.db>        records as containerd's stores read them
//	godump init <meta.db>   open read-write and run containerd's DB.Init (migrations)
//	godump raw <meta.db>    every bucket, key, value and sequence, in hex
package main

import (
	"context"
	"encoding/hex"
	// go-digest only parses algorithms whose hash is linked in; containerd links sha256.
	_ "crypto/sha256"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/metadata"
	"github.com/containerd/containerd/namespaces"
	bolt "go.etcd.io/bbolt"
)

func kv(m map[string]string) string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}

func ts(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func raw(b *bolt.Bucket, path string) {
	fmt.Printf("bucket %s seq=%d\n", path, b.Sequence())
	check(b.ForEach(func(k, v []byte) error {
		if v == nil {
			raw(b.Bucket(k), path+"/"+hex.EncodeToString(k))
		} else {
			fmt.Printf("key %s %s=%s\n", path, hex.EncodeToString(k), hex.EncodeToString(v))
		}
		return nil
	}))
}

func main() {
	switch os.Args[1] {
	case "init":
		db, err := bolt.Open(os.Args[2], 0644, &bolt.Options{Timeout: time.Second})
		check(err)
		check(metadata.NewDB(db, nil, nil).Init(context.Background()))
		check(db.Close())
		return
	case "raw":
		db, err := bolt.Open(os.Args[2], 0644, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		check(err)
		check(db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				raw(b, hex.EncodeToString(name))
				return nil
			})
		}))
		return
	}
	db, err := bolt.Open(os.Args[1], 0644, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	check(err)
	mdb := metadata.NewDB(db, nil, nil)
	ctx := context.Background()
	var nss []string
	labels := map[string]map[string]string{}
	check(db.View(func(tx *bolt.Tx) error {
		s := metadata.NewNamespaceStore(tx)
		var err error
		if nss, err = s.List(ctx); err != nil {
			return err
		}
		for _, ns := range nss {
			if labels[ns], err = s.Labels(ctx, ns); err != nil {
				return err
			}
		}
		return nil
	}))
	for _, ns := range nss {
		fmt.Printf("namespace %s %s\n", ns, kv(labels[ns]))
		nctx := namespaces.WithNamespace(ctx, ns)
		imgs, err := metadata.NewImageStore(mdb).List(nctx)
		check(err)
		for _, i := range imgs {
			fmt.Printf("image %s %s %s %s %d %s %s %s %s\n", ns, i.Name, i.Target.MediaType,
				i.Target.Digest, i.Target.Size, ts(i.CreatedAt), ts(i.UpdatedAt), kv(i.Labels),
				kv(i.Target.Annotations))
		}
		check(mdb.ContentStore().Walk(nctx, func(i content.Info) error {
			fmt.Printf("content %s %s %d %s %s %s\n", ns, i.Digest, i.Size, ts(i.CreatedAt),
				ts(i.UpdatedAt), kv(i.Labels))
			return nil
		}))
		lm := metadata.NewLeaseManager(mdb)
		ls, err := lm.List(nctx)
		check(err)
		for _, l := range ls {
			fmt.Printf("lease %s %s %s %s\n", ns, l.ID, ts(l.CreatedAt), kv(l.Labels))
			rs, err := lm.ListResources(nctx, l)
			check(err)
			for _, r := range rs {
				fmt.Printf("lease-resource %s %s %s %s\n", ns, l.ID, r.Type, r.ID)
			}
		}
		cs, err := metadata.NewContainerStore(mdb).List(nctx)
		check(err)
		for _, c := range cs {
			opts, spec := "-", "-"
			if c.Runtime.Options != nil {
				opts = c.Runtime.Options.TypeUrl
			}
			if c.Spec != nil {
				spec = fmt.Sprintf("%s:%d", c.Spec.TypeUrl, len(c.Spec.Value))
			}
			var ext []string
			for k, v := range c.Extensions {
				ext = append(ext, fmt.Sprintf("%s=%s:%d", k, v.TypeUrl, len(v.Value)))
			}
			sort.Strings(ext)
			fmt.Printf("container %s %s %s %s %s %s %s %s %s %s %s [%s]\n", ns, c.ID, c.Image,
				c.Runtime.Name, opts, c.Snapshotter, c.SnapshotKey, spec, ts(c.CreatedAt),
				ts(c.UpdatedAt), kv(c.Labels), strings.Join(ext, ","))
		}
	}
}
