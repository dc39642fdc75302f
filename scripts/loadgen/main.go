// Command loadgen is the overload tests' and benchmark's load generator: applies of new users against one api,
// over raw keep-alive HTTP/1.1 connections, in a closed loop (C connections, each sending its next request as
// soon as it has its answer, like wrk) or an open loop (a constant arrival rate, like wrk2: each request is due at
// its time whether or not earlier ones were answered, and its latency counts from that time, so a server that
// falls behind cannot hide it). It is written in Go so that one process drives 10,000 connections on two cores
// without becoming the bottleneck; it prints one JSON report with every coupon it was told of, for the history
// check against MySQL.
//
// Usage: loadgen -url http://127.0.0.1:8080 -event E [-connections C | -rate R -max-connections M] -duration 8s
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

type report struct {
	Mode        string            `json:"mode"`
	Sent        int64             `json:"sent"`
	Answered    int64             `json:"answered"`
	ByStatus    map[string]int64  `json:"byStatus"`
	RetryAfter  int64             `json:"retryAfterOn503"`
	Timeouts    int64             `json:"timeouts"`
	Errors      int64             `json:"errors"`
	ErrorKinds  map[string]int64  `json:"errorKinds"`
	NotSent     int64             `json:"notSent"`
	Over2s      int64             `json:"over2s"`
	Latency     quantiles         `json:"latencyMs"`
	Admitted    quantiles         `json:"issuedLatencyMs"`
	PerSecond   []second          `json:"perSecond"`
	Issued      [][2]any          `json:"issued"`
	Connections int64             `json:"peakConnections"`
	Extra       map[string]string `json:"extra,omitempty"`
}

type quantiles struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// second is what was answered in one second of the run: all answers, and the decided ones (202, 409, 410)
// within 2 s, the goodput.
type second struct {
	Answered int64 `json:"answered"`
	Goodput  int64 `json:"goodput"`
	Shed     int64 `json:"shed"`
	// requests due in this second that got no answer within the timeout, or none at all
	Unanswered int64 `json:"unanswered"`
}

type outcome struct {
	status     int
	latency    time.Duration
	at         time.Duration
	user       string
	sequence   int
	retryAfter time.Duration
	err        string
}

var (
	target     = flag.String("url", "http://127.0.0.1:8080", "api base URL")
	event      = flag.String("event", "", "event id")
	conns      = flag.Int("connections", 0, "closed loop: connections, each sending back to back")
	rate       = flag.Float64("rate", 0, "open loop: requests per second")
	maxConns   = flag.Int("max-connections", 10000, "open loop: most connections open at once")
	duration   = flag.Duration("duration", 8*time.Second, "how long requests are sent")
	timeout    = flag.Duration("timeout", 2*time.Second, "a request not answered this long after it was due counts as a timeout")
	prefix     = flag.String("users", "u", "user id prefix (unique per process)")
	hostHeader = flag.String("host", "", "Host header of every request (default: the host:port of -url), e.g. the host an Ingress routes")
	dialers    = flag.Int("dial-concurrency", 64, "closed loop: connections being opened at once before the run starts")
	backoff    = flag.Bool("honor-retry-after", true, "closed loop: after a 503 with Retry-After, wait before the next request as the README tells clients to: Retry-After, doubled for each 503 in a row (at most 8x), jittered 0.5-1.5x")
	userSerial atomic.Int64
)

func main() {
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil || *event == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url and -event are required")
		os.Exit(2)
	}
	addr := u.Host
	if *hostHeader == "" {
		*hostHeader = addr
	}
	path := "/v1/events/" + *event + "/apply"
	results := make(chan outcome, 65536)
	var collected []outcome
	done := make(chan struct{})
	go func() {
		for o := range results {
			collected = append(collected, o)
		}
		close(done)
	}()
	var peak atomic.Int64
	var open atomic.Int64
	track := func(delta int64) {
		n := open.Add(delta)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				return
			}
		}
	}
	var notSent int64
	var start time.Time
	mode := "closed"
	if *rate > 0 {
		mode = "open"
		start = time.Now()
		notSent = openLoop(addr, path, start, results, track)
	} else {
		start = closedLoop(addr, path, results, track)
	}
	close(results)
	<-done
	out := summarize(mode, collected, start)
	out.NotSent = notSent
	out.Connections = peak.Load()
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		os.Exit(1)
	}
}

// closedLoop opens every connection first (at most -dial-concurrency at a time, so that the listen queue is not
// what is measured), then each sends applies back to back for the duration. Returns when the run started.
func closedLoop(addr, path string, results chan<- outcome, track func(int64)) time.Time {
	clients := make([]*client, *conns)
	var wg sync.WaitGroup
	gate := make(chan struct{}, *dialers)
	for i := range clients {
		wg.Add(1)
		gate <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-gate }()
			c := &client{addr: addr, track: track}
			// Open, then prove the server holds it (GET of the event answered 200; not /healthz, which is on the
			// api's ops port, not behind an Ingress): a connection the kernel completed but the server has not
			// accepted yet would otherwise count its first request's wait as the server's.
			for attempt := 0; attempt < 10 && !c.warm(); attempt++ {
				time.Sleep(100 * time.Millisecond)
			}
			clients[i] = c
		}(i)
	}
	wg.Wait()
	start := time.Now()
	end := start.Add(*duration)
	for _, c := range clients {
		wg.Add(1)
		go func(c *client) {
			defer wg.Done()
			refusals := 0
			for time.Now().Before(end) {
				due := time.Now()
				o := c.apply(path, due, start)
				results <- o
				if !*backoff || o.retryAfter == 0 {
					refusals = 0
					continue
				}
				refusals++
				wait := float64(o.retryAfter) * float64(int(1)<<min(refusals-1, 3)) * (0.5 + rand.Float64())
				time.Sleep(time.Duration(wait))
			}
			c.close()
		}(c)
	}
	wg.Wait()
	return start
}

// openLoop sends one request every 1/rate seconds for the duration, each on an idle connection or a new one (up
// to -max-connections; past that it waits for one, and its latency still counts from when it was due).
func openLoop(addr, path string, start time.Time, results chan<- outcome, track func(int64)) int64 {
	idle := make(chan *client, *maxConns)
	slots := make(chan struct{}, *maxConns)
	var wg sync.WaitGroup
	var notSent int64
	interval := time.Duration(float64(time.Second) / *rate)
	total := int64(float64(*duration) / float64(interval))
	for i := int64(0); i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *client
			select {
			case c = <-idle:
			default:
				select {
				case c = <-idle:
				case slots <- struct{}{}:
					c = &client{addr: addr, track: track}
				case <-time.After(time.Until(due.Add(*timeout))):
					atomic.AddInt64(&notSent, 1)
					results <- outcome{status: 0, err: "no connection free", at: time.Since(start), latency: *timeout}
					return
				}
			}
			o := c.apply(path, due, start)
			results <- o
			if c.conn != nil {
				idle <- c
			} else {
				<-slots
			}
		}()
	}
	wg.Wait()
	for {
		select {
		case c := <-idle:
			c.close()
		default:
			return notSent
		}
	}
}

type client struct {
	addr   string
	conn   net.Conn
	reader *bufio.Reader
	track  func(int64)
}

func (c *client) dial() error {
	conn, err := net.DialTimeout("tcp", c.addr, 3*time.Second)
	if err != nil {
		return err
	}
	c.conn = conn
	c.reader = bufio.NewReaderSize(conn, 4096)
	c.track(1)
	return nil
}

func (c *client) warm() bool {
	if c.conn == nil && c.dial() != nil {
		return false
	}
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write([]byte("GET /v1/events/" + *event + " HTTP/1.1\r\nHost: " + *hostHeader + "\r\n\r\n")); err != nil {
		c.close()
		return false
	}
	status, closeAfter, _, _, err := readResponse(c.reader)
	if err != nil || status != 200 || closeAfter {
		c.close()
		return false
	}
	return true
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
		c.track(-1)
	}
}

// apply sends one apply of a new user on this connection (opening one if needed) and reads the answer.
func (c *client) apply(path string, due, start time.Time) outcome {
	user := *prefix + strconv.FormatInt(userSerial.Add(1), 36)
	o := outcome{user: user, at: due.Sub(start)}
	if c.conn == nil {
		if err := c.dial(); err != nil {
			o.err = "connect"
			o.latency = time.Since(due)
			return o
		}
	}
	body := `{"userId":"` + user + `"}`
	request := "POST " + path + " HTTP/1.1\r\nHost: " + *hostHeader + "\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
	deadline := due.Add(*timeout)
	c.conn.SetDeadline(deadline)
	if _, err := c.conn.Write([]byte(request)); err != nil {
		o.err = classify(err)
		o.latency = time.Since(due)
		c.close()
		return o
	}
	status, closeAfter, retryAfter, payload, err := readResponse(c.reader)
	o.latency = time.Since(due)
	if err != nil {
		o.err = classify(err)
		c.close()
		return o
	}
	o.status = status
	o.retryAfter = retryAfter
	if status == 202 {
		var issued struct {
			Sequence int `json:"sequence"`
		}
		if json.Unmarshal(payload, &issued) == nil {
			o.sequence = issued.Sequence
		}
	}
	if closeAfter {
		c.close()
	}
	return o
}

func classify(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "io: " + err.Error()
}

func readResponse(r *bufio.Reader) (status int, closeAfter bool, retryAfter time.Duration, body []byte, err error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, false, 0, nil, err
	}
	if len(line) < 12 {
		return 0, false, 0, nil, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, 0, nil, err
	}
	length := -1
	for {
		header, err := r.ReadSlice('\n')
		if err != nil {
			return 0, false, 0, nil, err
		}
		if len(header) <= 2 {
			break
		}
		colon := bytes.IndexByte(header, ':')
		if colon < 0 {
			continue
		}
		name := string(bytes.ToLower(header[:colon]))
		value := string(bytes.TrimSpace(header[colon+1:]))
		switch name {
		case "content-length":
			length, _ = strconv.Atoi(value)
		case "connection":
			closeAfter = bytes.EqualFold([]byte(value), []byte("close"))
		case "retry-after":
			seconds, _ := strconv.Atoi(value)
			retryAfter = time.Duration(seconds) * time.Second
		}
	}
	if length < 0 {
		return 0, false, 0, nil, fmt.Errorf("no content-length")
	}
	body = make([]byte, length)
	if _, err := readFull(r, body); err != nil {
		return 0, false, 0, nil, err
	}
	return status, closeAfter, retryAfter, body, nil
}

func readFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func summarize(mode string, all []outcome, start time.Time) report {
	out := report{Mode: mode, ByStatus: map[string]int64{}, ErrorKinds: map[string]int64{}, Issued: [][2]any{}}
	var latencies, issued []float64
	seconds := int(duration.Seconds()+0.999) + 1
	out.PerSecond = make([]second, seconds)
	for _, o := range all {
		out.Sent++
		ms := float64(o.latency) / float64(time.Millisecond)
		if o.err != "" {
			if due := int(o.at / time.Second); due >= 0 && due < seconds {
				out.PerSecond[due].Unanswered++
			}
			if o.err == "timeout" {
				out.Timeouts++
			} else {
				out.Errors++
				out.ErrorKinds[o.err]++
			}
			continue
		}
		out.Answered++
		out.ByStatus[strconv.Itoa(o.status)]++
		latencies = append(latencies, ms)
		if o.latency > 2*time.Second {
			out.Over2s++
		}
		if o.status == 503 && o.retryAfter > 0 {
			out.RetryAfter++
		}
		if o.status == 202 {
			issued = append(issued, ms)
			out.Issued = append(out.Issued, [2]any{o.user, o.sequence})
		}
		index := int((o.at + o.latency) / time.Second)
		if index >= 0 && index < seconds {
			out.PerSecond[index].Answered++
			switch {
			case o.status == 503:
				out.PerSecond[index].Shed++
			case (o.status == 202 || o.status == 409 || o.status == 410) && o.latency <= 2*time.Second:
				out.PerSecond[index].Goodput++
			}
		}
	}
	out.Latency = quantilesOf(latencies)
	out.Admitted = quantilesOf(issued)
	return out
}

func quantilesOf(values []float64) quantiles {
	if len(values) == 0 {
		return quantiles{}
	}
	sort.Float64s(values)
	at := func(q float64) float64 {
		i := int(q * float64(len(values)))
		if i >= len(values) {
			i = len(values) - 1
		}
		return values[i]
	}
	return quantiles{P50: at(0.5), P99: at(0.99), Max: values[len(values)-1]}
}
