package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// The checker reads only what the services themselves recorded: each
// application appends one line per request it serves,
//
//	TXN SERVICE VERSION
//
// where TXN is the transaction its sidecar named in the x-coordinator-txn
// header, and SERVICE and VERSION are its own. Auth's lines say which
// version of Auth each transaction ran on (its token's version marker:
// v1 and v2 reject each other's tokens). As in examples/authdemo, a
// violation is a transaction that ran on two versions of one service,
// counted once however many times it did.
type checker struct {
	seen   map[string]map[string]string // txn -> service -> first version seen
	broken map[string]bool              // txns counted as violations
	served map[string]map[string]int64  // service -> version -> requests served
	noTxn  int64                        // requests served outside any transaction
}

func newChecker() *checker {
	return &checker{seen: map[string]map[string]string{}, broken: map[string]bool{}, served: map[string]map[string]int64{}}
}

// read adds the records of one service.
func (c *checker) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return fmt.Errorf("record %q: want TXN SERVICE VERSION", sc.Text())
		}
		c.record(f[0], f[1], f[2])
	}
	return sc.Err()
}

// readFile adds the records of the file at path.
func (c *checker) readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := c.read(f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func (c *checker) record(txn, service, version string) {
	if c.served[service] == nil {
		c.served[service] = map[string]int64{}
	}
	c.served[service][version]++
	if txn == "-" {
		c.noTxn++ // the sidecar always names one: not expected
		return
	}
	m := c.seen[txn]
	if m == nil {
		m = map[string]string{}
		c.seen[txn] = m
	}
	if v, ok := m[service]; !ok {
		m[service] = version
	} else if v != version {
		c.broken[txn] = true
	}
}

// violations counts transactions that ran on two versions of one service.
func (c *checker) violations() int { return len(c.broken) }

// orphans counts transactions some service served that never passed
// through root: a dependency's sidecar started them, so an application did
// not copy the mesh headers to a call (the checker could not see a
// violation in them), or a record is missing.
func (c *checker) orphans(root string) int {
	n := 0
	for _, m := range c.seen {
		if _, ok := m[root]; !ok {
			n++
		}
	}
	return n
}
