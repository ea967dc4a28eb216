// Command loadgen is this project's load generator for etcd v3-compatible servers (used by scripts/bench.ts).
// It drives one workload against the given endpoints and prints one JSON line with the result:
//
//	{"op":"put","clients":16,"conns":16,"requests":52000,"seconds":5.0,"rps":10400,"p50_ms":1.4,"p99_ms":4.5,"errors":0}
//
// Build (offline, Debian's etcd 3.4 Go sources):
//
//	GO111MODULE=off GOPATH=$CACHE/gopath:/usr/share/gocode GOPROXY=off GOFLAGS= GOCACHE=$CACHE/gocache \
//	  go build -o $CACHE/loadgen scripts/bench/loadgen.go
//
// Ops: put, range, range-serializable, txn-put, lease-grant, lease-keepalive, watch, ping, status, failover. --warmup
// applies to the closed-loop ops (all but watch and ping) and to failover.
// N clients (goroutines, each with one request in flight) share C gRPC connections (default min(N, 16)).
// watch: W watchers on one key prefix spread over S watch streams; P puts from a separate connection are fanned out
// to every watcher (phase 1: events/s delivered); then a rate-limited phase measures put-to-event latency.
// status: Maintenance.Status of every endpoint on its own connection ("members": one entry per endpoint, IDs in hex).
// failover: N writers (one put in flight each, per-request timeouts staggered from --req-timeout to twice that, so
// that they do not all time out at once) write for --warmup; then the leader is found through Maintenance.Status and
// printed as "#leader <endpoint> <member id>". The caller kills it and writes the kill's wall-clock time (Unix
// microseconds) as one line on stdin. failover_ms = from the kill to the completion of the first successful put that
// was issued after the kill; first_any_ms counts any put completed after the kill (including ones issued before).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
)

type result struct {
	Op       string  `json:"op"`
	Clients  int     `json:"clients"`
	Conns    int     `json:"conns"`
	Requests int64   `json:"requests"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	P999     float64 `json:"p999_ms"`
	Errors   int64   `json:"errors"`
	Error    string  `json:"error,omitempty"`
	// watch only
	Watchers   int   `json:"watchers,omitempty"`
	Streams    int   `json:"streams,omitempty"`
	Puts       int   `json:"puts,omitempty"`
	LatSamples int64 `json:"lat_samples,omitempty"`
	// loadgen's own CPU (user+sys) per request over the measured interval, µs
	ClientCPU float64 `json:"client_cpu_us,omitempty"`
	// status only
	Members []memberStatus `json:"members,omitempty"`
	// load: keys written (requests counts txns); leases: expiry lateness and counts
	Keys           int64   `json:"keys,omitempty"`
	LateP50        float64 `json:"late_p50_ms,omitempty"`
	LateP99        float64 `json:"late_p99_ms,omitempty"`
	LateP999       float64 `json:"late_p999_ms,omitempty"`
	LateMax        float64 `json:"late_max_ms,omitempty"`
	Expired        int64   `json:"expired,omitempty"`
	NotExpired     int64   `json:"not_expired,omitempty"`
	KeptLost       int64   `json:"kept_lost,omitempty"`
	ExpirySeconds  float64 `json:"expiry_seconds,omitempty"`
	KeepAliveCount int     `json:"kept,omitempty"`
	// --compact-after: the physical compaction's own time, and the revision it compacted at
	CompactMs  float64 `json:"compact_ms,omitempty"`
	CompactRev int64   `json:"compact_rev,omitempty"`
	// failover only
	Leader     string  `json:"leader,omitempty"`
	NewLeader  string  `json:"new_leader,omitempty"`
	FailoverMs float64 `json:"failover_ms,omitempty"`
	FirstAnyMs float64 `json:"first_any_ms,omitempty"`
}

type memberStatus struct {
	Endpoint     string `json:"endpoint"`
	ID           string `json:"id,omitempty"`
	Leader       string `json:"leader,omitempty"`
	RaftTerm     uint64 `json:"raft_term,omitempty"`
	RaftIndex    uint64 `json:"raft_index,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	Error        string `json:"error,omitempty"`
}

var (
	endpoints  = flag.String("endpoints", "127.0.0.1:2379", "comma-separated client endpoints")
	op         = flag.String("op", "put", "put|range|...|watch|ping|status|failover (see the package comment)")
	clients    = flag.Int("clients", 1, "concurrent clients (one request in flight each); for watch: put clients")
	conns      = flag.Int("conns", 0, "gRPC connections shared by the clients (default min(clients, 16))")
	duration   = flag.Duration("duration", 5*time.Second, "measured run time (ignored when --total > 0)")
	total      = flag.Int64("total", 0, "stop after this many requests instead of --duration")
	warmup     = flag.Duration("warmup", 0, "unmeasured warm-up with the same workload before measuring")
	keySize    = flag.Int("key-size", 8, "key size in bytes")
	valSize    = flag.Int("val-size", 256, "value size in bytes")
	keySpace   = flag.Int("key-space", 100000, "number of distinct keys")
	rangeKeys  = flag.Int("range-keys", 1000, "range ops: keys written before measuring and then read at random")
	reqTimeout = flag.Duration("req-timeout", 10*time.Second, "per-request timeout")
	dialTO     = flag.Duration("dial-timeout", 5*time.Second, "connection timeout")
	marks      = flag.Bool("marks", false, "print '#start' and '#end' lines when the measured interval starts and ends")
	timeout    = flag.Duration("timeout", 0, "hard limit for the whole run (default warmup+duration+60s)")
	watchers   = flag.Int("watchers", 1000, "watch: number of watchers (all on one key prefix)")
	streams    = flag.Int("streams", 10, "watch: number of watch streams the watchers are spread over")
	puts       = flag.Int("puts", 2000, "watch: puts fanned out to every watcher (throughput phase)")
	latPuts    = flag.Int("lat-puts", 200, "watch: puts in the latency phase (0 = skip)")
	latRate    = flag.Float64("lat-rate", 100, "watch: puts per second in the latency phase")
	watchMax   = flag.Duration("watch-max", 60*time.Second, "watch: give up waiting for a phase's events after this")
	failMax    = flag.Duration("failover-max", 20*time.Second, "failover: give up waiting for a write after the kill")
	batch      = flag.Int("batch", 1, "load: puts per txn")
	readRatio  = flag.Float64("read-ratio", 0.5, "mixed: fraction of the requests that are reads (the rest are puts)")
	scanKeys   = flag.Int("scan", 10000, "scan: consecutive keys per range read")
	rate       = flag.Float64("rate", 0, "closed-loop ops: at most this many requests per second over all clients")
	distinct   = flag.Bool("distinct", false, "watch: each watcher on a key of its own instead of all on one prefix")
	leaseCount = flag.Int("leases", 100000, "leases: leases granted")
	leaseKeys  = flag.Int("lease-keys", 3, "leases: keys attached to each lease (one txn per lease)")
	leaseTTL   = flag.Int64("lease-ttl", 15, "leases: TTL in seconds")
	keepFrac   = flag.Float64("keep-frac", 0.1, "leases: fraction of the leases kept alive")
	expiryMax  = flag.Duration("expiry-max", 180*time.Second, "leases: wait at most this long after the last grant")
	pingWait   = flag.Duration("ping-wait", 0, "ping: retry until the first successful read, at most this long")
	compactAt  = flag.Duration("compact-after", 0, "closed-loop ops: this long into the measured run, compact (physical) at the current revision")
	slowLog    = flag.Duration("slow", 0, "closed-loop ops and the watch latency phase: print '#slow <unix ms at start> <ms>' to stderr for each request (or put→event) that took at least this long (0 = off)")
)

var (
	firstErr   atomic.Value
	errCount   int64
	value      string
	keys       []string
	watchPrfx  = "bench-watch/"
	printMu    sync.Mutex
	printed    bool
	cpuStart   time.Duration
	cpuUsed    time.Duration
	dialConfig = func(eps []string) clientv3.Config {
		return clientv3.Config{Endpoints: eps, DialTimeout: *dialTO, DialKeepAliveTime: 30 * time.Second}
	}
)

// mark prints a phase marker so that the caller can sample the server's CPU time around the measured interval.
func mark(what string) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		t := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		if what == "start" {
			cpuStart = t
		} else {
			cpuUsed = t - cpuStart
		}
	}
	if *marks {
		printMu.Lock()
		fmt.Println("#" + what)
		printMu.Unlock()
	}
}

func noteErr(err error) {
	atomic.AddInt64(&errCount, 1)
	if firstErr.Load() == nil {
		firstErr.Store(err.Error())
	}
}

func emit(r result) {
	printMu.Lock()
	defer printMu.Unlock()
	if printed {
		return
	}
	printed = true
	r.Errors = atomic.LoadInt64(&errCount)
	if r.Requests > 0 && cpuUsed > 0 {
		r.ClientCPU = float64(cpuUsed.Nanoseconds()) / 1e3 / float64(r.Requests)
	}
	if r.Error == "" {
		if e, ok := firstErr.Load().(string); ok {
			r.Error = e
		}
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

func fail(r result, err error) {
	noteErr(err)
	r.Error = err.Error()
	emit(r)
	os.Exit(1)
}

func main() {
	flag.Parse()
	eps := strings.Split(*endpoints, ",")
	n := *clients
	if n < 1 {
		n = 1
	}
	c := *conns
	if c <= 0 {
		c = n
		if c > 16 {
			c = 16
		}
	}
	if *op == "watch" {
		c = *conns
		if c <= 0 {
			c = *streams
			if c > 16 {
				c = 16
			}
		}
	}
	base := result{Op: *op, Clients: n, Conns: c}
	limit := *timeout
	if limit <= 0 {
		limit = *warmup + *duration + 60*time.Second
		if *op == "watch" {
			limit = 2**watchMax + 60*time.Second
		}
		if *op == "failover" {
			limit = *warmup + *failMax + 120*time.Second
		}
		if *op == "status" {
			limit = *dialTO + *reqTimeout + 10*time.Second
		}
		if *op == "ping" {
			limit = *pingWait + *dialTO + *reqTimeout + 10*time.Second
		}
		if *op == "leases" {
			limit = *duration + *expiryMax + time.Duration(*leaseTTL)*time.Second + 60*time.Second
		}
	}
	time.AfterFunc(limit, func() {
		fail(base, fmt.Errorf("loadgen: hard timeout after %v", limit))
	})

	value = makeValue(*valSize)
	ks := *keySpace
	if ks < 1 {
		ks = 1
	}
	keys = make([]string, ks)
	for i := range keys {
		k := fmt.Sprintf("%0*x", *keySize, i)
		if len(k) > *keySize && *keySize > 0 {
			k = k[len(k)-*keySize:]
		}
		keys[i] = k
	}

	if *op == "status" {
		r := base
		r.Members = statusAll(eps)
		emit(r)
		os.Exit(0)
	}

	if *op == "ping" && *pingWait > 0 {
		waitReady(base, eps)
		os.Exit(0)
	}

	cls := make([]*clientv3.Client, c)
	for i := range cls {
		cl, err := clientv3.New(dialConfig(eps))
		if err != nil {
			fail(base, fmt.Errorf("connect %s: %w", *endpoints, err))
		}
		cls[i] = cl
	}

	switch *op {
	case "ping":
		ctx, cancel := context.WithTimeout(context.Background(), *reqTimeout)
		_, err := cls[0].Get(ctx, "bench-ping")
		cancel()
		if err != nil {
			fail(base, err)
		}
		emit(base)
	case "watch":
		runWatch(base, cls, eps)
	case "failover":
		runFailover(base, cls, eps, n)
	case "leases":
		runLeases(base, cls, n)
	default:
		runClosedLoop(base, cls, n)
	}
	os.Exit(0)
}

func makeValue(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	r := rand.New(rand.NewSource(1))
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[r.Intn(len(letters))]
	}
	return string(b)
}

// worker issues one kind of request, one at a time; it returns the number of requests done, their latencies
// (only while recording), and stops when next() returns false.
type worker func(ctx context.Context, cl *clientv3.Client, id int, next func() bool, record func(time.Duration))

func unary(do func(ctx context.Context, cl *clientv3.Client, r *rand.Rand) error) worker {
	return func(ctx context.Context, cl *clientv3.Client, id int, next func() bool, record func(time.Duration)) {
		r := rand.New(rand.NewSource(time.Now().UnixNano() + int64(id)*7919))
		for next() {
			rctx, cancel := context.WithTimeout(ctx, *reqTimeout)
			t := time.Now()
			err := do(rctx, cl, r)
			d := time.Since(t)
			cancel()
			if *slowLog > 0 && d >= *slowLog {
				fmt.Fprintf(os.Stderr, "#slow %d %.3f\n", t.UnixMilli(), float64(d.Microseconds())/1000)
			}
			if err != nil {
				noteErr(err)
				if ctx.Err() != nil {
					return
				}
				continue
			}
			record(d)
		}
	}
}

// keepAliveWorker sends LeaseKeepAlive requests on its own stream, one in flight, as etcd's own client would renew.
func keepAliveWorker(leases []clientv3.LeaseID) worker {
	return func(ctx context.Context, cl *clientv3.Client, id int, next func() bool, record func(time.Duration)) {
		lc := pb.NewLeaseClient(cl.ActiveConnection())
		lease := int64(leases[id%len(leases)])
		// each stream lives in its own child context so that a broken one can be torn down; ctx ends them all
		var stream pb.Lease_LeaseKeepAliveClient
		stop := func() {}
		defer func() { stop() }()
		for next() {
			if stream == nil {
				s, cancel, err := openKeepAlive(ctx, lc)
				if err != nil {
					noteErr(err)
					if ctx.Err() != nil {
						return
					}
					time.Sleep(10 * time.Millisecond)
					continue
				}
				stream, stop = s, cancel
			}
			t := time.Now()
			err := stream.Send(&pb.LeaseKeepAliveRequest{ID: lease})
			var resp *pb.LeaseKeepAliveResponse
			if err == nil {
				resp, err = stream.Recv()
			}
			if err == nil && resp.TTL <= 0 {
				err = fmt.Errorf("keepalive: lease %x not found (TTL %d)", lease, resp.TTL)
			}
			if err != nil {
				noteErr(err)
				if ctx.Err() != nil {
					return
				}
				stop()
				stream, stop = nil, func() {}
				continue
			}
			record(time.Since(t))
		}
	}
}

func openKeepAlive(ctx context.Context, lc pb.LeaseClient) (pb.Lease_LeaseKeepAliveClient, context.CancelFunc, error) {
	sctx, cancel := context.WithCancel(ctx)
	s, err := lc.LeaseKeepAlive(sctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return s, cancel, nil
}

func runClosedLoop(base result, cls []*clientv3.Client, n int) {
	var w worker
	switch *op {
	case "put":
		w = unary(func(ctx context.Context, cl *clientv3.Client, r *rand.Rand) error {
			_, err := cl.Put(ctx, keys[r.Intn(len(keys))], value)
			return err
		})
	case "range", "range-serializable":
		nk := *rangeKeys
		if nk > len(keys) {
			nk = len(keys)
		}
		if nk < 1 {
			nk = 1
		}
		if err := populate(cls, keys[:nk]); err != nil {
			fail(base, fmt.Errorf("populate: %w", err))
		}
		var opts []clientv3.OpOption
		if *op == "range-serializable" {
			opts = append(opts, clientv3.WithSerializable())
		}
		w = unary(func(ctx context.Context, cl *clientv3.Client, r *rand.Rand) error {
			resp, err := cl.Get(ctx, keys[r.Intn(nk)], opts...)
			if err == nil && len(resp.Kvs) != 1 {
				err = errors.New("range: key not found")
			}
			return err
		})
	case "txn-put":
		w = unary(func(ctx context.Context, cl *clientv3.Client, r *rand.Rand) error {
			_, err := cl.Txn(ctx).Then(clientv3.OpPut(keys[r.Intn(len(keys))], value)).Commit()
			return err
		})
	case "load":
		w = loadWorker()
	case "mixed":
		w = unary(func(ctx context.Context, cl *clientv3.Client, r *rand.Rand) error {
			k := keys[r.Intn(len(keys))]
			if r.Float64() >= *readRatio {
				_, err := cl.Put(ctx, k, value)
				return err
			}
			resp, err := cl.Get(ctx, k)
			if err == nil && len(resp.Kvs) != 1 {
				err = fmt.Errorf("mixed: key %s not found", k)
			}
			return err
		})
	case "count":
		w = unary(func(ctx context.Context, cl *clientv3.Client, r *rand.Rand) error {
			resp, err := cl.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
			if err == nil && resp.Count < int64(len(keys)) {
				err = fmt.Errorf("count: %d keys, expected at least %d", resp.Count, len(keys))
			}
			return err
		})
	case "scan":
		span := *scanKeys
		if span >= len(keys) {
			fail(base, fmt.Errorf("scan: --scan %d needs a larger --key-space", span))
		}
		w = unary(func(ctx context.Context, cl *clientv3.Client, r *rand.Rand) error {
			i := r.Intn(len(keys) - span)
			resp, err := cl.Get(ctx, keys[i], clientv3.WithRange(keys[i+span]))
			if err == nil && len(resp.Kvs) != span {
				err = fmt.Errorf("scan: %d keys from %s, expected %d", len(resp.Kvs), keys[i], span)
			}
			return err
		})
	case "lease-grant":
		w = unary(func(ctx context.Context, cl *clientv3.Client, r *rand.Rand) error {
			_, err := cl.Grant(ctx, 300)
			return err
		})
	case "lease-keepalive":
		leases := make([]clientv3.LeaseID, n)
		for i := range leases {
			ctx, cancel := context.WithTimeout(context.Background(), *reqTimeout)
			resp, err := cls[i%len(cls)].Grant(ctx, 300)
			cancel()
			if err != nil {
				fail(base, fmt.Errorf("lease grant: %w", err))
			}
			leases[i] = resp.ID
		}
		w = keepAliveWorker(leases)
	default:
		fail(base, fmt.Errorf("unknown op %q", *op))
	}

	if *warmup > 0 {
		runPhase(cls, n, w, *warmup, 0, false)
		atomic.StoreInt64(&errCount, 0)
		firstErr = atomic.Value{}
	}
	mark("start")
	var compacted chan compaction
	if *compactAt > 0 {
		compacted = make(chan compaction, 1)
		go func() {
			time.Sleep(*compactAt)
			compacted <- compactNow(cls[0])
		}()
	}
	lats, secs := runPhase(cls, n, w, *duration, *total, true)
	mark("end")
	r := base
	if compacted != nil {
		c := <-compacted
		if c.err != nil {
			noteErr(fmt.Errorf("compaction: %w", c.err))
		}
		r.CompactMs, r.CompactRev = c.ms, c.rev
	}
	r.Requests = int64(len(lats))
	r.Seconds = secs
	if *op == "load" {
		r.Keys = atomic.LoadInt64(&loadedKeys)
		r.Requests = r.Keys // throughput in keys/s; the latencies are per txn of --batch puts
		if r.Keys < int64(len(keys)) {
			noteErr(fmt.Errorf("load: only %d of %d keys written", r.Keys, len(keys)))
		}
	}
	if secs > 0 {
		r.RPS = float64(r.Requests) / secs
	}
	r.P50, r.P99, r.P999 = percentiles(lats)
	emit(r)
}

type compaction struct {
	ms  float64
	rev int64
	err error
}

// compactNow compacts at the current revision and waits until the compacted records are gone (physical).
func compactNow(cl *clientv3.Client) compaction {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	resp, err := cl.Get(ctx, "\x00", clientv3.WithCountOnly())
	if err != nil {
		return compaction{err: err}
	}
	rev := resp.Header.Revision
	t0 := time.Now()
	_, err = cl.Compact(ctx, rev, clientv3.WithCompactPhysical())
	return compaction{ms: float64(time.Since(t0).Microseconds()) / 1000, rev: rev, err: err}
}

// runPhase runs n workers for d (or until total requests are done) and returns all latencies and the wall time.
func runPhase(cls []*clientv3.Client, n int, w worker, d time.Duration, tot int64, rec bool) ([]time.Duration, float64) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	deadline := start.Add(d)
	var issued, paced int64
	next := func() bool {
		if *rate > 0 {
			i := atomic.AddInt64(&paced, 1) - 1
			if d := time.Until(start.Add(time.Duration(float64(i) / *rate * 1e9))); d > 0 {
				time.Sleep(d)
			}
		}
		if tot > 0 {
			return atomic.AddInt64(&issued, 1) <= tot
		}
		return time.Now().Before(deadline)
	}
	per := make([][]time.Duration, n)
	var wg sync.WaitGroup
	var lastEnd int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var mine []time.Duration
			record := func(d time.Duration) {
				if rec {
					mine = append(mine, d)
				}
			}
			w(ctx, cls[i%len(cls)], i, next, record)
			per[i] = mine
			end := time.Since(start).Nanoseconds()
			for {
				old := atomic.LoadInt64(&lastEnd)
				if end <= old || atomic.CompareAndSwapInt64(&lastEnd, old, end) {
					break
				}
			}
		}(i)
	}
	wg.Wait()
	var all []time.Duration
	for _, p := range per {
		all = append(all, p...)
	}
	return all, float64(lastEnd) / 1e9
}

func percentiles(l []time.Duration) (float64, float64, float64) {
	if len(l) == 0 {
		return 0, 0, 0
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	at := func(q float64) float64 {
		i := int(q * float64(len(l)))
		if i >= len(l) {
			i = len(l) - 1
		}
		return float64(l[i].Microseconds()) / 1000
	}
	return at(0.50), at(0.99), at(0.999)
}

func populate(cls []*clientv3.Client, ks []string) error {
	var wg sync.WaitGroup
	var ferr atomic.Value
	ch := make(chan string)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(cl *clientv3.Client) {
			defer wg.Done()
			for k := range ch {
				ctx, cancel := context.WithTimeout(context.Background(), *reqTimeout)
				_, err := cl.Put(ctx, k, value)
				cancel()
				if err != nil {
					ferr.Store(err)
				}
			}
		}(cls[i%len(cls)])
	}
	for _, k := range ks {
		ch <- k
	}
	close(ch)
	wg.Wait()
	if e, ok := ferr.Load().(error); ok {
		return e
	}
	return nil
}

// watchValue encodes the phase and the send time into a value of the configured size.
func watchValue(phase byte, t time.Time) string {
	s := string(phase) + strconv.FormatInt(t.UnixNano(), 10) + "|"
	if len(s) < len(value) {
		s += value[len(s):]
	}
	return s
}

func parseWatchValue(v []byte) (byte, int64) {
	if len(v) < 2 {
		return 0, 0
	}
	end := 1
	for end < len(v) && v[end] != '|' {
		end++
	}
	ns, err := strconv.ParseInt(string(v[1:end]), 10, 64)
	if err != nil {
		return 0, 0
	}
	return v[0], ns
}

func runWatch(base result, cls []*clientv3.Client, eps []string) {
	W, S := *watchers, *streams
	if S < 1 {
		S = 1
	}
	if S > W {
		S = W
	}
	base.Clients, base.Watchers, base.Streams, base.Puts = W, W, S, *puts
	// events per put: every watcher sees every put under the prefix; with --distinct only the put key's watcher
	fan := int64(W)
	if *distinct {
		if len(keys) > W {
			fail(base, fmt.Errorf("watch --distinct: --key-space %d is more keys than the %d watchers", len(keys), W))
		}
		fan = 1
	}
	watcherIdx := 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prefixEnd := []byte(watchPrfx)
	prefixEnd[len(prefixEnd)-1]++

	var events, created, latCount int64
	var lastEvent int64 // unix nanos of the latest event received
	lats := make([][]time.Duration, S)
	var latMu sync.Mutex
	ready := make(chan struct{})
	var readyOnce sync.Once
	for s := 0; s < S; s++ {
		per := W / S
		if s < W%S {
			per++
		}
		wc := pb.NewWatchClient(cls[s%len(cls)].ActiveConnection())
		st, err := wc.Watch(ctx)
		if err != nil {
			fail(base, fmt.Errorf("watch stream: %w", err))
		}
		go func(s int, st pb.Watch_WatchClient) {
			var mine []time.Duration
			defer func() {
				latMu.Lock()
				lats[s] = mine
				latMu.Unlock()
			}()
			for {
				resp, err := st.Recv()
				if err != nil {
					if ctx.Err() == nil {
						noteErr(fmt.Errorf("watch recv: %w", err))
					}
					return
				}
				now := time.Now().UnixNano()
				if resp.Created {
					if atomic.AddInt64(&created, 1) == int64(W) {
						readyOnce.Do(func() { close(ready) })
					}
				}
				if resp.Canceled {
					noteErr(fmt.Errorf("watch canceled: %s", resp.CancelReason))
				}
				if resp.CompactRevision != 0 {
					noteErr(fmt.Errorf("watch compacted at %d", resp.CompactRevision))
				}
				if len(resp.Events) == 0 {
					continue
				}
				sampled := false
				for _, ev := range resp.Events {
					if ph, ns := parseWatchValue(ev.Kv.Value); ph == 'L' && ns > 0 {
						d := time.Duration(now - ns)
						mine = append(mine, d)
						sampled = true
						if *slowLog > 0 && d >= *slowLog {
							fmt.Fprintf(os.Stderr, "#slow %d %.3f\n", ns/1e6, float64(d.Microseconds())/1000)
						}
					}
				}
				if sampled {
					latMu.Lock()
					lats[s] = mine
					latMu.Unlock()
					atomic.AddInt64(&latCount, int64(len(resp.Events)))
				}
				atomic.AddInt64(&events, int64(len(resp.Events)))
				atomic.StoreInt64(&lastEvent, now)
			}
		}(s, st)
		for i := 0; i < per; i++ {
			create := &pb.WatchCreateRequest{Key: []byte(watchPrfx), RangeEnd: prefixEnd}
			if *distinct {
				create = &pb.WatchCreateRequest{Key: []byte(watchPrfx + keys[watcherIdx%len(keys)])}
			}
			watcherIdx++
			req := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: create}}
			if err := st.Send(req); err != nil {
				fail(base, fmt.Errorf("watch create: %w", err))
			}
		}
	}
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		fail(base, fmt.Errorf("only %d of %d watchers created after 60s", atomic.LoadInt64(&created), W))
	}

	// The putter uses its own connection, as another client would.
	pc, err := clientv3.New(dialConfig(eps))
	if err != nil {
		fail(base, fmt.Errorf("connect putter: %w", err))
	}
	putters := *clients
	if putters < 1 {
		putters = 1
	}
	// doPuts issues count puts (stopping early at the watch-max deadline) and returns how many succeeded.
	doPuts := func(count int, phase byte, rate float64) int64 {
		var idx, done int64
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(*watchMax)
		for p := 0; p < putters; p++ {
			wg.Add(1)
			go func(p int) {
				defer wg.Done()
				r := rand.New(rand.NewSource(int64(p) + 1))
				for {
					i := atomic.AddInt64(&idx, 1) - 1
					if i >= int64(count) || time.Now().After(deadline) {
						return
					}
					if rate > 0 {
						at := start.Add(time.Duration(float64(i) / rate * 1e9))
						if d := time.Until(at); d > 0 {
							time.Sleep(d)
						}
					}
					rctx, c := context.WithTimeout(ctx, *reqTimeout)
					_, err := pc.Put(rctx, watchPrfx+keys[r.Intn(len(keys))], watchValue(phase, time.Now()))
					c()
					if err != nil {
						noteErr(fmt.Errorf("put: %w", err))
					} else {
						atomic.AddInt64(&done, 1)
					}
				}
			}(p)
		}
		wg.Wait()
		if n := atomic.LoadInt64(&done); n < int64(count) {
			noteErr(fmt.Errorf("watch: only %d of %d puts done within %v", n, count, *watchMax))
		}
		return atomic.LoadInt64(&done)
	}
	// waitFor waits until the event counter reaches want, or no event arrived for 10 s, or max passed.
	waitFor := func(counter *int64, want int64, max time.Duration) bool {
		deadline := time.Now().Add(max)
		for {
			if atomic.LoadInt64(counter) >= want {
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
			last := atomic.LoadInt64(&lastEvent)
			if last > 0 && time.Since(time.Unix(0, last)) > 10*time.Second {
				return false
			}
			time.Sleep(2 * time.Millisecond)
		}
	}

	// Phase 1: throughput of fan-out.
	mark("start")
	t0 := time.Now()
	atomic.StoreInt64(&lastEvent, t0.UnixNano())
	want := doPuts(*puts, 'T', 0) * fan
	if !waitFor(&events, want, *watchMax) {
		noteErr(fmt.Errorf("watch: %d of %d events delivered", atomic.LoadInt64(&events), want))
	}
	mark("end")
	got := atomic.LoadInt64(&events)
	secs := float64(atomic.LoadInt64(&lastEvent)-t0.UnixNano()) / 1e9
	r := base
	r.Requests = got
	r.Seconds = secs
	if secs > 0 {
		r.RPS = float64(got) / secs
	}

	// Phase 2: put-to-event latency at a modest put rate.
	if *latPuts > 0 {
		before := atomic.LoadInt64(&events)
		putters = 1
		lwant := doPuts(*latPuts, 'L', *latRate) * fan
		if !waitFor(&latCount, lwant, *watchMax) {
			noteErr(fmt.Errorf("watch latency phase: %d of %d events delivered", atomic.LoadInt64(&events)-before, lwant))
		}
		latMu.Lock()
		var all []time.Duration
		for _, l := range lats {
			all = append(all, l...)
		}
		latMu.Unlock()
		r.LatSamples = int64(len(all))
		r.P50, r.P99, r.P999 = percentiles(all)
	}
	emit(r)
	cancel()
}

// statusAll asks every endpoint for Maintenance.Status on its own connection, concurrently.
func statusAll(eps []string) []memberStatus {
	out := make([]memberStatus, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func(i int, ep string) {
			defer wg.Done()
			out[i].Endpoint = ep
			cl, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: *dialTO})
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), *reqTimeout)
			defer cancel()
			resp, err := pb.NewMaintenanceClient(cl.ActiveConnection()).Status(ctx, &pb.StatusRequest{})
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			out[i].ID = strconv.FormatUint(resp.Header.MemberId, 16)
			out[i].Leader = strconv.FormatUint(resp.Leader, 16)
			out[i].RaftTerm = resp.RaftTerm
			out[i].RaftIndex = resp.RaftIndex
			out[i].AppliedIndex = resp.RaftAppliedIndex
		}(i, ep)
	}
	wg.Wait()
	return out
}

// leaderOf returns the endpoint and ID of the member that reports itself as the leader, if every answering member
// (at least a majority) names the same leader.
func leaderOf(ms []memberStatus) (string, string) {
	lead, ep, answered := "", "", 0
	for _, m := range ms {
		if m.Error != "" {
			continue
		}
		answered++
		if m.Leader == "" || m.Leader == "0" || (lead != "" && m.Leader != lead) {
			return "", ""
		}
		lead = m.Leader
		if m.ID == m.Leader {
			ep = m.Endpoint
		}
	}
	if answered*2 <= len(ms) || ep == "" {
		return "", ""
	}
	return ep, lead
}

func runFailover(base result, cls []*clientv3.Client, eps []string, n int) {
	type rec struct{ issue, done int64 }
	var mu sync.Mutex
	var recs []rec
	var armed int64 // recording starts when the leader is announced (Unix ns)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cl := cls[i%len(cls)]
			r := rand.New(rand.NewSource(time.Now().UnixNano() + int64(i)*7919))
			to := *reqTimeout + time.Duration(i)**reqTimeout/time.Duration(n)
			for ctx.Err() == nil {
				rctx, c := context.WithTimeout(ctx, to)
				t := time.Now().UnixNano()
				_, err := cl.Put(rctx, keys[r.Intn(len(keys))], value)
				d := time.Now().UnixNano()
				c()
				if err != nil {
					if ctx.Err() == nil {
						noteErr(err)
						time.Sleep(2 * time.Millisecond) // no hot loop while the cluster has no leader
					}
					continue
				}
				if a := atomic.LoadInt64(&armed); a > 0 && d >= a {
					mu.Lock()
					recs = append(recs, rec{t, d})
					mu.Unlock()
				}
			}
		}(i)
	}
	stopAll := func() {
		cancel()
		wg.Wait()
	}
	time.Sleep(*warmup)
	var leaderEp, leaderID string
	for deadline := time.Now().Add(30 * time.Second); ; {
		if leaderEp, leaderID = leaderOf(statusAll(eps)); leaderEp != "" {
			break
		}
		if time.Now().After(deadline) {
			stopAll()
			fail(base, errors.New("failover: no agreed leader within 30s"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := base
	r.Leader = leaderEp
	atomic.StoreInt64(&armed, time.Now().UnixNano())
	atomic.StoreInt64(&errCount, 0)
	firstErr = atomic.Value{}
	printMu.Lock()
	fmt.Printf("#leader %s %s\n", leaderEp, leaderID)
	printMu.Unlock()
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	us, perr := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if perr != nil {
		stopAll()
		fail(r, fmt.Errorf("failover: no kill time on stdin (%q, %v)", line, err))
	}
	kill := us * 1000
	deadline := time.Now().Add(*failMax)
	for {
		first, anyDone := int64(0), int64(0)
		mu.Lock()
		for _, x := range recs {
			if x.done < kill {
				continue
			}
			if anyDone == 0 || x.done < anyDone {
				anyDone = x.done
			}
			if x.issue >= kill && (first == 0 || x.done < first) {
				first = x.done
			}
		}
		r.Requests = int64(len(recs))
		mu.Unlock()
		if first > 0 {
			r.FailoverMs = float64(first-kill) / 1e6
			r.FirstAnyMs = float64(anyDone-kill) / 1e6
			break
		}
		if time.Now().After(deadline) {
			stopAll()
			fail(r, fmt.Errorf("failover: no successful write within %v of the kill", *failMax))
		}
		time.Sleep(time.Millisecond)
	}
	stopAll()
	var live []string
	for _, ep := range eps {
		if ep != leaderEp {
			live = append(live, ep)
		}
	}
	r.NewLeader, _ = leaderOf(statusAll(live))
	emit(r)
}

var loadedKeys int64

// loadWorker writes every key of the key space once, --batch puts per txn, each client taking the next batch; a
// failed txn is retried until it succeeds or the run ends.
func loadWorker() worker {
	var nextKey int64
	b := int64(*batch)
	if b < 1 {
		b = 1
	}
	return func(ctx context.Context, cl *clientv3.Client, id int, next func() bool, record func(time.Duration)) {
		for next() {
			from := atomic.AddInt64(&nextKey, b) - b
			if from >= int64(len(keys)) {
				return
			}
			to := from + b
			if to > int64(len(keys)) {
				to = int64(len(keys))
			}
			ops := make([]clientv3.Op, 0, to-from)
			for k := from; k < to; k++ {
				ops = append(ops, clientv3.OpPut(keys[k], value))
			}
			for {
				rctx, cancel := context.WithTimeout(ctx, *reqTimeout)
				t := time.Now()
				_, err := cl.Txn(rctx).Then(ops...).Commit()
				d := time.Since(t)
				cancel()
				if err == nil {
					record(d)
					atomic.AddInt64(&loadedKeys, to-from)
					break
				}
				noteErr(err)
				if ctx.Err() != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
}

// waitReady retries a linearizable read on a fresh connection until one succeeds (a server starting up), at most
// --ping-wait; seconds = time from this process's start to the first success.
func waitReady(base result, eps []string) {
	start := time.Now()
	deadline := start.Add(*pingWait)
	var last error
	for time.Now().Before(deadline) {
		cl, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 500 * time.Millisecond})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = cl.Get(ctx, "bench-ping")
			cancel()
			cl.Close()
			if err == nil {
				r := base
				r.Requests = 1
				r.Seconds = time.Since(start).Seconds()
				emit(r)
				return
			}
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	fail(base, fmt.Errorf("ping: not ready within %v: %v", *pingWait, last))
}

// runLeases grants --leases leases (n clients, one lease at a time each) and attaches --lease-keys keys to each in one
// txn; the first --keep-frac of them are kept alive (clientv3's KeepAlive), the rest expire. A watch on the keys'
// prefix records when each lease's first key is deleted: lateness = that moment - (grant response + TTL). Throughput
// and latencies are those of the set-up requests (grant and txn).
func runLeases(base result, cls []*clientv3.Client, n int) {
	L, K := *leaseCount, *leaseKeys
	keep := int(float64(L) * *keepFrac)
	ttl := time.Duration(*leaseTTL) * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const prefix = "bench-lease/"
	due := make([]int64, L)      // unix ns: grant response + TTL
	deleted := make([]int64, L)  // unix ns of the first delete event of the lease's keys
	var expiredN, keptLost int64 // expired leases that were not kept alive / that were
	var lastDelete int64
	wch := cls[0].Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithFilterPut(),
		clientv3.WithCreatedNotify())
	if resp, ok := <-wch; !ok || resp.Err() != nil {
		fail(base, fmt.Errorf("leases: watch: %v", resp.Err()))
	}
	go func() {
		for resp := range wch {
			now := time.Now().UnixNano()
			if err := resp.Err(); err != nil {
				noteErr(fmt.Errorf("leases watch: %w", err))
				continue
			}
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)[len(prefix):]
				i, err := strconv.Atoi(k[:strings.IndexByte(k, '/')])
				if err != nil || i >= L || atomic.LoadInt64(&deleted[i]) != 0 {
					continue
				}
				atomic.StoreInt64(&deleted[i], now)
				atomic.StoreInt64(&lastDelete, now)
				if i < keep {
					atomic.AddInt64(&keptLost, 1)
				} else {
					atomic.AddInt64(&expiredN, 1)
				}
			}
		}
	}()

	var nextLease int64 = -1
	var kept sync.WaitGroup
	keepCtx := ctx
	w := func(ctx context.Context, cl *clientv3.Client, id int, next func() bool, record func(time.Duration)) {
		for next() {
			i := int(atomic.AddInt64(&nextLease, 1))
			if i >= L {
				return
			}
			rctx, c := context.WithTimeout(ctx, *reqTimeout)
			t := time.Now()
			g, err := cl.Grant(rctx, *leaseTTL)
			c()
			if err != nil {
				noteErr(fmt.Errorf("grant: %w", err))
				continue
			}
			done := time.Now()
			record(done.Sub(t))
			due[i] = done.Add(ttl).UnixNano()
			ops := make([]clientv3.Op, K)
			for j := range ops {
				ops[j] = clientv3.OpPut(fmt.Sprintf("%s%07d/%d", prefix, i, j), value, clientv3.WithLease(g.ID))
			}
			rctx, c = context.WithTimeout(ctx, *reqTimeout)
			t = time.Now()
			_, err = cl.Txn(rctx).Then(ops...).Commit()
			c()
			if err != nil {
				noteErr(fmt.Errorf("lease txn: %w", err))
				continue
			}
			record(time.Since(t))
			if i < keep {
				ch, err := cl.KeepAlive(keepCtx, g.ID) // outlives the set-up phase's context
				if err != nil {
					noteErr(fmt.Errorf("keepalive: %w", err))
					continue
				}
				kept.Add(1)
				go func() {
					defer kept.Done()
					for range ch {
					}
				}()
			}
		}
	}
	mark("start")
	lats, secs := runPhase(cls, n, w, *duration, int64(2*L), true)
	mark("end")
	r := base
	r.Requests = int64(len(lats))
	r.Seconds = secs
	if secs > 0 {
		r.RPS = float64(r.Requests) / secs
	}
	r.P50, r.P99, r.P999 = percentiles(lats)
	r.KeepAliveCount = keep

	// wait for the expiries: every lease not kept alive, or no delete for 20 s after the last one was due, or expiry-max
	setupEnd := time.Now()
	var lastDue int64
	for _, d := range due {
		if d > lastDue {
			lastDue = d
		}
	}
	want := int64(0)
	for i := keep; i < L; i++ {
		if due[i] > 0 {
			want++
		}
	}
	for atomic.LoadInt64(&expiredN) < want {
		now := time.Now()
		if now.Sub(setupEnd) > *expiryMax {
			break
		}
		last := atomic.LoadInt64(&lastDelete)
		if now.UnixNano() > lastDue && last > 0 && now.Sub(time.Unix(0, last)) > 20*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var late []time.Duration
	var maxLate time.Duration
	for i := keep; i < L; i++ {
		if d := atomic.LoadInt64(&deleted[i]); d > 0 && due[i] > 0 {
			l := time.Duration(d - due[i])
			if l < 0 {
				l = 0 // expired before the grant's response + TTL: at most the grant's latency early
			}
			late = append(late, l)
			if l > maxLate {
				maxLate = l
			}
		}
	}
	r.Expired = atomic.LoadInt64(&expiredN)
	r.NotExpired = want - r.Expired
	r.KeptLost = atomic.LoadInt64(&keptLost)
	r.LateP50, r.LateP99, r.LateP999 = percentiles(late)
	r.LateMax = float64(maxLate.Microseconds()) / 1000
	if first, last := lastDue-int64(ttl), atomic.LoadInt64(&lastDelete); last > 0 {
		r.ExpirySeconds = float64(last-first) / 1e9
	}
	if r.NotExpired > 0 {
		noteErr(fmt.Errorf("leases: %d of %d leases did not expire", r.NotExpired, want))
	}
	if r.KeptLost > 0 {
		noteErr(fmt.Errorf("leases: %d leases kept alive expired", r.KeptLost))
	}
	emit(r)
	cancel()
}
