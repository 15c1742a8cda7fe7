// Package demoload is what examples/authdemo and examples/polyglot share, so
// that their last lines mean the same: the load generator (workers that
// request a service's front door until a deadline, counting requests and
// failures and keeping a latency histogram) and waiting for an update.
package demoload

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// requestTimeout bounds one request of the load: longer than any hold of
// BF (5s by default) or WF pause, so that a request of a consistent update
// never fails by timing out, and short enough that a stop is not stuck.
const requestTimeout = 30 * time.Second

// Load is the load generator: workers that send requests to Portal until
// their context ends or the deadline passes. Its counters are read while it
// runs (the running summary) and once it has stopped (the last line).
type Load struct {
	Requests, Failed atomic.Int64
	Lat              Latencies
	// FirstErr is the text of the first failure (a string), if any.
	FirstErr atomic.Value
	// Header, if set before Start, is asked before each request for a
	// header to send with it (ok false: none), such as a lane's tag.
	Header func() (name, value string, ok bool)
	wg     sync.WaitGroup
}

// Start runs n workers against url until ctx ends or deadline passes (zero:
// no deadline). A request in flight when ctx ends is finished, not cut, so
// that stopping the load is not counted as failures.
func (l *Load) Start(ctx context.Context, url string, n int, deadline time.Time) {
	for range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			client := &http.Client{Timeout: requestTimeout}
			for ctx.Err() == nil && (deadline.IsZero() || time.Now().Before(deadline)) {
				start := time.Now()
				req, err := http.NewRequest(http.MethodGet, url, nil)
				if err != nil {
					l.Failed.Add(1)
					l.FirstErr.CompareAndSwap(nil, err.Error())
					return
				}
				if l.Header != nil {
					if name, value, ok := l.Header(); ok {
						req.Header.Set(name, value)
					}
				}
				resp, err := client.Do(req)
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
					}
				}
				l.Requests.Add(1)
				if err != nil {
					l.Failed.Add(1)
					l.FirstErr.CompareAndSwap(nil, err.Error())
				}
				l.Lat.Add(time.Since(start))
				time.Sleep(rand.N(12 * time.Millisecond)) // think time
			}
		}()
	}
}

// Wait waits for every worker to finish its last request.
func (l *Load) Wait() { l.wg.Wait() }

// Latencies is a histogram with buckets 1% wide: bounded memory however
// long the demo runs, quantiles within 1%.
type Latencies struct {
	mu      sync.Mutex
	buckets []int64
	n       int64
}

const latGrowth = 1.01

func latBucket(d time.Duration) int {
	us := float64(d.Microseconds())
	if us < 1 {
		return 0
	}
	return int(math.Log(us)/math.Log(latGrowth)) + 1
}

// Add records one latency.
func (l *Latencies) Add(d time.Duration) {
	i := latBucket(d)
	l.mu.Lock()
	defer l.mu.Unlock()
	if i >= len(l.buckets) {
		l.buckets = append(l.buckets, make([]int64, i+1-len(l.buckets))...)
	}
	l.buckets[i]++
	l.n++
}

// Quantile returns the upper bound of the bucket holding the q-quantile (0
// with no sample).
func (l *Latencies) Quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == 0 {
		return 0
	}
	rank := int64(float64(l.n) * q)
	if rank >= l.n {
		rank = l.n - 1
	}
	var seen int64
	for i, c := range l.buckets {
		seen += c
		if seen > rank {
			if i == 0 {
				return time.Microsecond
			}
			return time.Duration(math.Pow(latGrowth, float64(i))) * time.Microsecond
		}
	}
	return 0
}

// WaitUpdate polls the update until it finishes, or deadline passes.
func WaitUpdate(ctx context.Context, admin pb.AdminServiceClient, id string, deadline time.Time) (*pb.Update, error) {
	for time.Now().Before(deadline) {
		u, err := admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: id})
		if err != nil {
			return nil, fmt.Errorf("update %s: %w", id, err)
		}
		if u.GetFinishedAt() != nil && u.GetProgress() == nil {
			return u, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil, fmt.Errorf("update %s did not finish", id)
}

// MS is d in milliseconds, as the last lines print it.
func MS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
