// Command fairness is a closed-loop HTTP/1.1 load generator that reports how evenly a proxy serves its client
// connections: req/s, p50/p99/p99.9/max latency over every request, and the spread of requests per connection
// (min, p10, median, p90, max; p90/p10 near 1.0 means every connection got the same share). wrk's percentiles do not
// show who waited; this does. "slowest1%" is the mean count of the 1 % of connections (at least one) served least, and
// med/slowest1% the median connection's count over it. BYIDX=1 also prints the count of every connection in connect order.
//
// Build and run (standard library only; pin it to the load CPU as the gateway bench does):
//
//	GO111MODULE=off GOFLAGS= go build -o /tmp/fairness scripts/bench/fairness.go
//	taskset -c 1 /tmp/fairness -addr 127.0.0.1:PORT -c 256 -d 5
//
// It sends `GET / HTTP/1.1` and reads responses framed by Content-Length (the bench backend's), one in flight per
// connection.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "")
	conns := flag.Int("c", 64, "")
	secs := flag.Float64("d", 3, "")
	flag.Parse()
	dur := time.Duration(*secs * float64(time.Second))
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	counts := make([]int, *conns)
	lats := make([][]time.Duration, *conns)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	errs := 0
	var mu sync.Mutex
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := net.Dial("tcp", *addr)
			if err != nil {
				mu.Lock()
				errs++
				mu.Unlock()
				return
			}
			defer c.Close()
			c.SetDeadline(deadline.Add(5 * time.Second))
			r := bufio.NewReaderSize(c, 8192)
			l := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if _, err := c.Write(req); err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
					break
				}
				cl := -1
				line, err := r.ReadString('\n')
				if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
					mu.Lock()
					errs++
					mu.Unlock()
					break
				}
				for {
					line, err = r.ReadString('\n')
					if err != nil {
						break
					}
					if line == "\r\n" {
						break
					}
					if len(line) > 16 && strings.EqualFold(line[:15], "content-length:") {
						cl, _ = strconv.Atoi(strings.TrimSpace(line[15:]))
					}
				}
				if err != nil || cl < 0 {
					mu.Lock()
					errs++
					mu.Unlock()
					break
				}
				if _, err := r.Discard(cl); err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
					break
				}
				l = append(l, time.Since(t0))
			}
			counts[i] = len(l)
			lats[i] = l
		}(i)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	var all []time.Duration
	total := 0
	for i := range lats {
		all = append(all, lats[i]...)
		total += counts[i]
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		k := int(p * float64(len(all)-1))
		return float64(all[k].Microseconds()) / 1000
	}
	cs := append([]int(nil), counts...)
	sort.Ints(cs)
	mean := float64(total) / float64(len(cs))
	// the slowest 1 % of the connections (at least one): their mean count against the median connection's
	slow := max(len(cs)/100, 1)
	slowSum := 0
	for _, c := range cs[:slow] {
		slowSum += c
	}
	slowMean := float64(slowSum) / float64(slow)
	fmt.Printf("c=%d rps=%.0f p50=%.2f p99=%.1f p99.9=%.1f max=%.1f ms  per-conn: min=%d p10=%d med=%d p90=%d max=%d (max/min %.1f, p90/p10 %.2f, mean %.0f) slowest1%%=%d conns mean %.0f (med/slowest1%% %.2f) errs=%d\n",
		*conns, float64(total)/el, pct(0.5), pct(0.99), pct(0.999), pct(1), cs[0], cs[len(cs)/10], cs[len(cs)/2], cs[len(cs)*9/10], cs[len(cs)-1],
		float64(cs[len(cs)-1])/float64(max(cs[0], 1)), float64(cs[len(cs)*9/10])/float64(max(cs[len(cs)/10], 1)), mean,
		slow, slowMean, float64(cs[len(cs)/2])/max(slowMean, 1), errs)
	if os.Getenv("BYIDX") != "" {
		for i := 0; i < len(counts); i += 16 {
			fmt.Printf("%v\n", counts[i:i+16])
		}
	}
}

func max[T int | float64](a, b T) T {
	if a > b {
		return a
	}
	return b
}
