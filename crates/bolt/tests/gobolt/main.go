// Command gobolt is the Go bbolt side of stowage-bolt's differential tests and benchmark.
//
//	gobolt dump <db>            print every bucket, key and value (hex), then run tx.Check
//	gobolt check <db>           run tx.Check only
//	gobolt apply <db> <script>  apply a script of operations (see ops below); with
//	                            GOBOLT_NO_FREELIST_SYNC=1 the freelist is not written
//	gobolt bench <dir> <singles> <gets> <bulk1> <bulk2>
//	gobolt singles <db> <from> <n>  n fsync'd single-put transactions, keys from..from+n
//
// Script lines: begin | commit | rollback | create P | createx P | delb P |
// put P K V | del P K | setseq P N | nextseq P, where P is a '/'-joined list of hex bucket
// names and K, V are hex ("-" for an empty value).
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "gobolt: "+format+"\n", a...)
	os.Exit(2)
}

func unhex(s string) []byte {
	if s == "-" {
		return []byte{}
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		die("bad hex %q: %v", s, err)
	}
	return b
}

func dumpBucket(w *bufio.Writer, path string, b *bolt.Bucket) {
	fmt.Fprintf(w, "B %s seq=%d\n", path, b.Sequence())
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			if child := b.Bucket(k); child != nil {
				dumpBucket(w, path+"/"+hex.EncodeToString(k), child)
				continue
			}
		}
		fmt.Fprintf(w, "K %s %s=%s\n", path, hex.EncodeToString(k), hex.EncodeToString(v))
	}
}

func check(tx *bolt.Tx) int {
	n := 0
	for err := range tx.Check() {
		fmt.Fprintf(os.Stderr, "check: %v\n", err)
		n++
	}
	return n
}

func openRO(path string) *bolt.DB {
	db, err := bolt.Open(path, 0600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		die("open %s: %v", path, err)
	}
	return db
}

func cmdDump(path string, doDump bool) {
	db := openRO(path)
	defer db.Close()
	bad := 0
	err := db.View(func(tx *bolt.Tx) error {
		if doDump {
			w := bufio.NewWriter(os.Stdout)
			_ = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				dumpBucket(w, hex.EncodeToString(name), b)
				return nil
			})
			w.Flush()
		}
		bad = check(tx)
		return nil
	})
	if err != nil {
		die("view: %v", err)
	}
	if bad > 0 {
		os.Exit(1)
	}
}

type parent interface {
	Bucket([]byte) *bolt.Bucket
	CreateBucket([]byte) (*bolt.Bucket, error)
	CreateBucketIfNotExists([]byte) (*bolt.Bucket, error)
	DeleteBucket([]byte) error
}

// resolve walks all but the last path element (if last is false: all of them).
func resolve(tx *bolt.Tx, p string, all bool) (parent, []byte) {
	parts := strings.Split(p, "/")
	var cur parent = tx
	n := len(parts)
	if !all {
		n--
	}
	for _, part := range parts[:n] {
		b := cur.Bucket(unhex(part))
		if b == nil {
			die("bucket %s not found", p)
		}
		cur = b
	}
	if all {
		return cur, nil
	}
	return cur, unhex(parts[len(parts)-1])
}

func bucketAt(tx *bolt.Tx, p string) *bolt.Bucket {
	b, _ := resolve(tx, p, true)
	bb, ok := b.(*bolt.Bucket)
	if !ok {
		die("path %s is the root", p)
	}
	return bb
}

func cmdApply(path, script string) {
	db, err := bolt.Open(path, 0600, &bolt.Options{Timeout: time.Second, NoSync: true,
		NoFreelistSync: os.Getenv("GOBOLT_NO_FREELIST_SYNC") == "1"})
	if err != nil {
		die("open %s: %v", path, err)
	}
	defer db.Close()
	f, err := os.Open(script)
	if err != nil {
		die("%v", err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	var tx *bolt.Tx
	line := 0
	for sc.Scan() {
		line++
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		var err error
		switch fs[0] {
		case "begin":
			tx, err = db.Begin(true)
		case "commit":
			err = tx.Commit()
		case "rollback":
			err = tx.Rollback()
		case "create":
			p, name := resolve(tx, fs[1], false)
			_, err = p.CreateBucket(name)
		case "createx":
			p, name := resolve(tx, fs[1], false)
			_, err = p.CreateBucketIfNotExists(name)
		case "delb":
			p, name := resolve(tx, fs[1], false)
			err = p.DeleteBucket(name)
		case "put":
			err = bucketAt(tx, fs[1]).Put(unhex(fs[2]), unhex(fs[3]))
		case "del":
			err = bucketAt(tx, fs[1]).Delete(unhex(fs[2]))
		case "setseq":
			n, _ := strconv.ParseUint(fs[2], 10, 64)
			err = bucketAt(tx, fs[1]).SetSequence(n)
		case "nextseq":
			_, err = bucketAt(tx, fs[1]).NextSequence()
		default:
			die("line %d: unknown op %q", line, fs[0])
		}
		if err != nil {
			die("line %d (%s): %v", line, fs[0], err)
		}
	}
	if err := sc.Err(); err != nil {
		die("read script: %v", err)
	}
}

func key(i int) []byte {
	k := make([]byte, 16)
	copy(k, "key-")
	binary.BigEndian.PutUint64(k[8:], uint64(i))
	return k
}

func report(name string, v float64, unit string) {
	fmt.Printf("%s %.6f %s\n", name, v, unit)
}

func bulk(dir string, n int) {
	path := fmt.Sprintf("%s/go-bulk-%d.db", dir, n)
	db, err := bolt.Open(path, 0600, nil)
	if err != nil {
		die("%v", err)
	}
	val := make([]byte, 32)
	start := time.Now()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := b.Put(key(i), val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		die("%v", err)
	}
	el := time.Since(start)
	db.Close()
	st, _ := os.Stat(path)
	report(fmt.Sprintf("bulk_%d_ms", n), float64(el.Microseconds())/1000, "ms")
	report(fmt.Sprintf("bulk_%d_peak_rss_bytes", n), float64(peakRSS()), "B")
	report(fmt.Sprintf("bulk_%d_file_bytes", n), float64(st.Size()), "B")
}

// peakRSS is VmHWM of this process: the most memory it has held so far.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n * 1024
		}
	}
	return -1
}

// singlePuts commits n fsync'd one-put transactions into db and returns the elapsed time.
func singlePuts(db *bolt.DB, from, n int) time.Duration {
	val := make([]byte, 100)
	start := time.Now()
	for i := from; i < from+n; i++ {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return b.Put(key(i), val)
		})
		if err != nil {
			die("%v", err)
		}
	}
	return time.Since(start)
}

func cmdSingles(path string, from, n int) {
	db, err := bolt.Open(path, 0600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		die("%v", err)
	}
	defer db.Close()
	el := singlePuts(db, from, n)
	report("singles_seconds", el.Seconds(), "s")
}

func cmdBench(dir string, singles, gets, bulk1, bulk2 int) {
	path := dir + "/go-bench.db"
	db, err := bolt.Open(path, 0600, nil)
	if err != nil {
		die("%v", err)
	}
	val := make([]byte, 100)
	start := time.Now()
	for i := 0; i < singles; i++ {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return b.Put(key(i), val)
		})
		if err != nil {
			die("%v", err)
		}
	}
	report("single_put_tx_per_s", float64(singles)/time.Since(start).Seconds(), "tx/s")
	start = time.Now()
	for i := 0; i < gets; i++ {
		_ = db.View(func(tx *bolt.Tx) error {
			if tx.Bucket([]byte("b")).Get(key(i%singles)) == nil {
				die("missing key")
			}
			return nil
		})
	}
	report("read_tx_one_get_per_s", float64(gets)/time.Since(start).Seconds(), "tx/s")
	start = time.Now()
	_ = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := 0; i < gets; i++ {
			if b.Get(key(i%singles)) == nil {
				die("missing key")
			}
		}
		return nil
	})
	report("gets_in_one_tx_per_s", float64(gets)/time.Since(start).Seconds(), "get/s")
	db.Close()
	st, _ := os.Stat(path)
	report("single_put_file_bytes", float64(st.Size()), "B")
	bulk(dir, bulk1)
	bulk(dir, bulk2)
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		die("bad number %q", s)
	}
	return n
}

func main() {
	if len(os.Args) < 3 {
		die("usage: gobolt dump|check|apply|bench ...")
	}
	switch os.Args[1] {
	case "dump":
		cmdDump(os.Args[2], true)
	case "check":
		cmdDump(os.Args[2], false)
	case "apply":
		cmdApply(os.Args[2], os.Args[3])
	case "singles":
		cmdSingles(os.Args[2], atoi(os.Args[3]), atoi(os.Args[4]))
	case "bench":
		cmdBench(os.Args[2], atoi(os.Args[3]), atoi(os.Args[4]), atoi(os.Args[5]), atoi(os.Args[6]))
	default:
		die("unknown command %q", os.Args[1])
	}
}
