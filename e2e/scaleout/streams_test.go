package scaleout_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// Sizes of the transfers. Every byte of them crosses Redis once (visitor's
// instance B to the holder A, or back), through a real redis-server.
const (
	spyTransfer = 10 << 20 // watched message by message, so smaller
	// wsMessageSize is bigger than messages.MaxData, so every WebSocket
	// message is cut into fragments.
	wsMessageSize = 100 << 10
	// transferLimit bounds any one transfer, -race included.
	transferLimit = 60 * time.Second
	// copyBuf is the buffer of every streaming loop here: no side ever
	// holds more than this of a body.
	copyBuf = 32 << 10
)

// The sizes: 100 MB each way over HTTP, and 2,000 WebSocket
// messages each way; a plain run moves them in about 8 s here. Under
// -race every byte costs ten times as much or more (coder/websocket masks
// byte by byte in Go, and each byte is instrumented on every leg): on
// this shared 2-core machine 100 MiB went at 11-19 MB/s alone and 4-7 MB/s
// each in the concurrent pair, the WebSocket at 1.4-2.5 MB/s each way, so
// the full sizes would take two minutes or more. The race build moves
// less to stay under a minute.
var (
	bigTransfer = int64(raceOr(100<<20, 32<<20))
	wsMessages  = raceOr(2000, 200)
)

// raceOr returns full, or race when the test binary was built with -race.
func raceOr(full, race int) int {
	if raceBuild() {
		return race
	}
	return full
}

// raceBuild reports whether the test binary was built with -race.
func raceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// outputBufferCeiling is the most Redis may buffer for one pub/sub
// subscriber at any moment: half of the pub/sub soft limit (8 MB for 60 s;
// the hard limit is 32 MB). Credit bounds what is in flight, and a
// subscriber's handlers never block, so Redis should hold little more
// than a frame or two for it; coming close to the soft limit would mean a
// long transfer to a busy instance gets its subscriber disconnected.
const outputBufferCeiling = 4 << 20

// TestStreamsAcrossRedis runs two in-process proxies, A and B, on one real
// redis-server, with the client connected to A and every visitor going
// through B, so every frame of every stream crosses the Redis bus. There
// is no cap on bodies (MaxBody -1). Throughout, a watcher samples Redis's
// output buffers for the proxies' pub/sub connections; at the end those
// must be the same connections as at the start (no disconnection for
// buffer limits, no reconnection) and never have buffered near the limit.
func TestStreamsAcrossRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("transfers hundreds of MB through Redis")
	}
	rig := startStreamRig(t)

	t.Run("Download", func(t *testing.T) {
		if err := rig.download(t, bigTransfer, "download"); err != nil {
			t.Error(err)
		}
	})
	t.Run("Upload", func(t *testing.T) {
		if err := rig.upload(t, bigTransfer, "upload"); err != nil {
			t.Error(err)
		}
	})
	t.Run("ConcurrentPair", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		wg.Go(func() { errs[0] = rig.download(t, bigTransfer, "pair-download") })
		wg.Go(func() { errs[1] = rig.upload(t, bigTransfer, "pair-upload") })
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("NoWholeBodiesOnBus", func(t *testing.T) { testNoWholeBodiesOnBus(t, rig) })
	t.Run("FragmentedWebSocket", func(t *testing.T) { testFragmentedWebSocket(t, rig) })
	t.Run("RedisKeptSubscribers", func(t *testing.T) { rig.checkRedis(t) })
	t.Run("StreamsGone", func(t *testing.T) { rig.checkStreamsGone(t) })
}

// streamRig is the setup of TestStreamsAcrossRedis.
type streamRig struct {
	redisLog string
	rdb      *goredis.Client // the test's own view of Redis
	a, b     *tunneltest.Env
	regA     *prometheus.Registry
	regB     *prometheus.Registry
	tun      *tunneltest.Tunnel
	svc      *bulkService
	visitor  *http.Client // reaches B whatever the URL says; no overall timeout
	watch    *bufferWatch
	// goroutines is the count once everything was up and idle.
	goroutines int
}

func startStreamRig(t *testing.T) *streamRig {
	t.Helper()
	// testenv keeps redis-server's output to itself; a log file of our
	// own lets the test read what Redis says about its clients.
	logPath := filepath.Join(t.TempDir(), "redis.log")
	rs := testenv.RedisWithArgs(t, "--logfile", logPath)
	r := &streamRig{
		redisLog: logPath,
		rdb:      newRedisClient(rs.Addr, "keyhole-test-watch"),
		regA:     prometheus.NewRegistry(),
		regB:     prometheus.NewRegistry(),
		svc:      newBulkService(),
	}
	t.Cleanup(func() { r.rdb.Close() })
	r.a = redisProxy(t, rs, proxy.Config{MaxBody: -1, Metrics: r.regA})
	r.b = redisProxy(t, rs, proxy.Config{MaxBody: -1, Metrics: r.regB})
	r.tun = r.a.Serve(r.svc)
	r.visitor = tunneltest.DialingClient(r.b.Addr)
	r.visitor.Timeout = 0 // each transfer has its own deadline
	t.Cleanup(r.visitor.CloseIdleConnections)

	// B must really route to A: small exchanges prove the path. Two at
	// once, as many as the transfers run at once, so that the client's
	// pool of idle connections to the service is as large before the
	// transfers as after, and the goroutine count can be compared.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			o := do(r.visitor, http.MethodGet, r.tun.URL+"/pair", nil, nil, 10*time.Second)
			if o.status != http.StatusOK || o.body != "paired" {
				t.Errorf("via B before the transfers: %v %q", o, o.body)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	r.visitor.CloseIdleConnections()

	r.watch = startBufferWatch(t, r.rdb)
	r.goroutines = runtime.NumGoroutine()
	return r
}

func newRedisClient(addr, name string) *goredis.Client {
	return goredis.NewClient(&goredis.Options{
		Addr:       addr,
		ClientName: name,
		// As bus/redis does: no Redis Cloud probing on a local server.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// digest is what one side saw of a body.
type digest struct {
	N      int64  `json:"n"`
	SHA256 string `json:"sha256"`
	Err    string `json:"err,omitempty"`
}

func (d digest) String() string {
	s := fmt.Sprintf("%d bytes sha256 %.16s…", d.N, d.SHA256)
	if d.Err != "" {
		s += " error " + d.Err
	}
	return s
}

// generator returns the deterministic bytes of the transfer named seed.
func generator(seed string) io.Reader {
	return rand.NewChaCha8(sha256.Sum256([]byte(seed)))
}

// hashingReader hashes what is read through it and closes eof once the
// source is exhausted, so its sum can be read safely from another
// goroutine than the one reading (the HTTP transport's).
type hashingReader struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	eof  chan struct{}
	once sync.Once
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.h.Write(p[:n])
	hr.n += int64(n)
	if err == io.EOF {
		hr.once.Do(func() { close(hr.eof) })
	}
	return n, err
}

// bulkService is the local service: it generates and consumes bodies in
// bounded streaming loops, and checks a WebSocket both ways.
type bulkService struct {
	mux *http.ServeMux

	mu   sync.Mutex
	sent map[string]chan digest // by seed: what /download wrote
	// paired counts /pair requests; pairs is closed at the second.
	paired int
	pairs  chan struct{}
	// wsDone receives the outcome of each /ws session, from the service's
	// side.
	wsDone chan error
}

func newBulkService() *bulkService {
	s := &bulkService{
		mux:    http.NewServeMux(),
		sent:   map[string]chan digest{},
		pairs:  make(chan struct{}),
		wsDone: make(chan error, 1),
	}
	s.mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	})
	s.mux.HandleFunc("/pair", func(w http.ResponseWriter, r *http.Request) {
		// Answers once two requests are in, so each holds a connection.
		s.mu.Lock()
		if s.paired++; s.paired == 2 {
			close(s.pairs)
		}
		s.mu.Unlock()
		select {
		case <-s.pairs:
			io.WriteString(w, "paired")
		case <-r.Context().Done():
		}
	})
	s.mux.HandleFunc("/download", s.download)
	s.mux.HandleFunc("/upload", s.upload)
	s.mux.HandleFunc("/ws", s.websocket)
	return s
}

func (s *bulkService) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// expect returns where /download reports what it wrote for seed.
func (s *bulkService) expect(seed string) <-chan digest {
	ch := make(chan digest, 1)
	s.mu.Lock()
	s.sent[seed] = ch
	s.mu.Unlock()
	return ch
}

func (s *bulkService) download(w http.ResponseWriter, r *http.Request) {
	seed := r.URL.Query().Get("seed")
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	s.mu.Lock()
	report := s.sent[seed]
	delete(s.sent, seed)
	s.mu.Unlock()
	if err != nil || report == nil {
		http.Error(w, "bad download request", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	h := sha256.New()
	written, err := io.CopyBuffer(io.MultiWriter(w, h), io.LimitReader(generator(seed), n), make([]byte, copyBuf))
	d := digest{N: written, SHA256: hex.EncodeToString(h.Sum(nil))}
	if err != nil {
		d.Err = err.Error()
	}
	report <- d
}

func (s *bulkService) upload(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r.Body, make([]byte, copyBuf))
	d := digest{N: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	if err != nil {
		d.Err = err.Error()
	}
	json.NewEncoder(w).Encode(d)
}

// download fetches size generated bytes through B and checks that they
// are the bytes the service wrote.
func (r *streamRig) download(t *testing.T, size int64, seed string) error {
	sent := r.svc.expect(seed)
	ctx, cancel := context.WithTimeout(context.Background(), transferLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/download?n=%d&seed=%s", r.tun.URL, size, seed), nil)
	if err != nil {
		return err
	}
	start := time.Now()
	resp, err := r.visitor.Do(req)
	if err != nil {
		return fmt.Errorf("download %s: %w", seed, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != size {
		return fmt.Errorf("download %s: status %d, Content-Length %d, want 200 and %d", seed, resp.StatusCode, resp.ContentLength, size)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, copyBuf))
	took := time.Since(start)
	got := digest{N: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	if err != nil {
		return fmt.Errorf("download %s: visitor read %v, then %w", seed, got, err)
	}
	var want digest
	select {
	case want = <-sent:
	case <-ctx.Done():
		return fmt.Errorf("download %s: the service never reported what it wrote", seed)
	}
	if want.Err != "" || want.N != size {
		return fmt.Errorf("download %s: the service wrote %v, want %d bytes", seed, want, size)
	}
	if got != want {
		return fmt.Errorf("download %s: visitor got %v, service wrote %v", seed, got, want)
	}
	t.Logf("download %s: %d MiB via B in %v, %.1f MB/s", seed, size>>20, took.Round(time.Millisecond), mbps(size, took))
	return nil
}

// upload sends size generated bytes through B and checks that the service
// read exactly those.
func (r *streamRig) upload(t *testing.T, size int64, seed string) error {
	ctx, cancel := context.WithTimeout(context.Background(), transferLimit)
	defer cancel()
	body := &hashingReader{r: io.LimitReader(generator(seed), size), h: sha256.New(), eof: make(chan struct{})}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.tun.URL+"/upload", body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	start := time.Now()
	resp, err := r.visitor.Do(req)
	if err != nil {
		return fmt.Errorf("upload %s: %w", seed, err)
	}
	defer resp.Body.Close()
	took := time.Since(start)
	var got digest
	if err := json.NewDecoder(resp.Body).Decode(&got); resp.StatusCode != http.StatusOK || err != nil {
		return fmt.Errorf("upload %s: status %d, answer %v (%v)", seed, resp.StatusCode, got, err)
	}
	select {
	case <-body.eof:
	case <-ctx.Done():
		return fmt.Errorf("upload %s: the transport never read the body to its end, yet the service answered %v", seed, got)
	}
	sent := digest{N: body.n, SHA256: hex.EncodeToString(body.h.Sum(nil))}
	if sent.N != size {
		return fmt.Errorf("upload %s: visitor sent %d bytes, want %d", seed, sent.N, size)
	}
	if got != sent {
		return fmt.Errorf("upload %s: service read %v, visitor sent %v", seed, got, sent)
	}
	t.Logf("upload %s: %d MiB via B in %v, %.1f MB/s", seed, size>>20, took.Round(time.Millisecond), mbps(size, took))
	return nil
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

// testNoWholeBodiesOnBus watches every message on the topics the proxies
// use while a download and an upload run: each payload is at most one data
// frame in its envelope, never a body.
func testNoWholeBodiesOnBus(t *testing.T, r *streamRig) {
	ctx, cancel := context.WithTimeout(context.Background(), transferLimit)
	defer cancel()
	channels, err := r.rdb.PubSubChannels(ctx, "keyhole:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	// One topic per instance, and nothing else: A's carries the request
	// bodies to the client it holds, B's the response bodies back.
	hostTopic, replyTopic := bus.InstanceTopic(r.a.Proxy.Instance()), bus.InstanceTopic(r.b.Proxy.Instance())
	if len(channels) != 2 || !contains(channels, hostTopic) || !contains(channels, replyTopic) {
		t.Fatalf("PUBSUB CHANNELS keyhole:* = %q, want exactly %q and %q", channels, hostTopic, replyTopic)
	}

	spy := newRedisClient(r.rdb.Options().Addr, spyName)
	defer spy.Close()
	ps := spy.Subscribe(ctx, channels...)
	defer ps.Close()
	for range channels {
		m, err := ps.Receive(ctx)
		if _, ok := m.(*goredis.Subscription); err != nil || !ok {
			t.Fatalf("spy subscription: %v %v", m, err)
		}
	}
	type topicStats struct{ messages, bytes, largest, over int }
	var mu sync.Mutex
	stats := map[string]*topicStats{}
	spyDone := make(chan struct{})
	go func() {
		defer close(spyDone)
		for {
			m, err := ps.ReceiveMessage(context.Background())
			if err != nil {
				return // closed below
			}
			mu.Lock()
			s := stats[m.Channel]
			if s == nil {
				s = &topicStats{}
				stats[m.Channel] = s
			}
			s.messages++
			s.bytes += len(m.Payload)
			s.largest = max(s.largest, len(m.Payload))
			if len(m.Payload) > stream.BufCap {
				s.over++
			}
			mu.Unlock()
		}
	}()

	if err := r.download(t, spyTransfer, "spy-download"); err != nil {
		t.Error(err)
	}
	if err := r.upload(t, spyTransfer, "spy-upload"); err != nil {
		t.Error(err)
	}
	// The spy's copies travel beside the proxies' own: wait until it has
	// seen at least the bodies' bytes on the topics that carried them.
	seen := func(topic string) int {
		mu.Lock()
		defer mu.Unlock()
		if s := stats[topic]; s != nil {
			return s.bytes
		}
		return 0
	}
	eventually(t, 10*time.Second, "the spy saw both bodies go by", func() bool {
		return seen(replyTopic) >= spyTransfer && seen(hostTopic) >= spyTransfer
	})
	ps.Close()
	<-spyDone

	for topic, s := range stats {
		t.Logf("%s: %d messages, %d bytes, largest %d (limit %d)", topic, s.messages, s.bytes, s.largest, stream.BufCap)
		if s.over > 0 {
			t.Errorf("%s: %d payloads larger than one data frame in its envelope (largest %d, limit %d)", topic, s.over, s.largest, stream.BufCap)
		}
	}
}

// spyName names the test's own subscriber, which the buffer watch leaves
// out.
const spyName = "keyhole-test-spy"

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// wsPayload is message i of the WebSocket test: its number, then a
// rotation of one random block that differs for every message, so a
// fragment delivered into the wrong message shows.
var wsBlock = func() []byte {
	b := make([]byte, wsMessageSize)
	generator("websocket").Read(b)
	return b
}()

func wsPayload(i int) []byte {
	b := make([]byte, wsMessageSize)
	r := (i * 7919) % wsMessageSize
	copy(b, wsBlock[r:])
	copy(b[wsMessageSize-r:], wsBlock[:r])
	binary.BigEndian.PutUint64(b, uint64(i))
	return b
}

// checkWSMessage reports how message want arrived, or nil if exactly.
func checkWSMessage(typ websocket.MessageType, b []byte, want int) error {
	if typ != websocket.MessageBinary || len(b) != wsMessageSize {
		return fmt.Errorf("message %d: %v of %d bytes, want binary of %d", want, typ, len(b), wsMessageSize)
	}
	if got := int(binary.BigEndian.Uint64(b)); got != want {
		return fmt.Errorf("got message %d, want %d: lost, repeated or reordered", got, want)
	}
	if !bytes.Equal(b, wsPayload(want)) {
		return fmt.Errorf("message %d: content differs", want)
	}
	return nil
}

// exchangeWS sends wsMessages numbered messages on conn while reading and
// checking as many from the other end.
func exchangeWS(ctx context.Context, conn *websocket.Conn) error {
	writeErr := make(chan error, 1)
	go func() {
		for i := range wsMessages {
			if err := conn.Write(ctx, websocket.MessageBinary, wsPayload(i)); err != nil {
				writeErr <- fmt.Errorf("write %d: %w", i, err)
				return
			}
		}
		writeErr <- nil
	}()
	var readErr error
	for i := range wsMessages {
		typ, b, err := conn.Read(ctx)
		if err != nil {
			readErr = fmt.Errorf("read, expecting %d: %w", i, err)
			break
		}
		if readErr = checkWSMessage(typ, b, i); readErr != nil {
			break
		}
	}
	if readErr != nil {
		conn.CloseNow() // unblocks the writer
	}
	return errors.Join(readErr, <-writeErr)
}

// websocket is the service's side of the WebSocket test: it checks what
// the visitor sends and sends its own numbered messages at the same time,
// then waits for the visitor's close.
func (s *bulkService) websocket(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		s.wsDone <- fmt.Errorf("service accept: %w", err)
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	err = exchangeWS(r.Context(), conn)
	if err == nil {
		// Only the visitor's close frame may follow.
		_, _, err = conn.Read(r.Context())
		if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
			err = nil
		} else {
			err = fmt.Errorf("after the messages: %v, want the visitor's normal close", err)
		}
	}
	if err != nil {
		err = fmt.Errorf("service side: %w", err)
	}
	s.wsDone <- err
}

// testFragmentedWebSocket: a WebSocket through B carries wsMessages
// numbered messages of wsMessageSize each way at once, every one arriving
// whole, in order and byte-exact at the other end.
func testFragmentedWebSocket(t *testing.T, r *streamRig) {
	ctx, cancel := context.WithTimeout(context.Background(), transferLimit)
	defer cancel()
	start := time.Now()
	conn, _, err := websocket.Dial(ctx, "ws://"+r.tun.Host()+"/ws", &websocket.DialOptions{HTTPClient: r.visitor})
	if err != nil {
		t.Fatalf("dial via B: %v", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	if err := exchangeWS(ctx, conn); err != nil {
		t.Errorf("visitor side: %v", err)
	}
	conn.Close(websocket.StatusNormalClosure, "")
	select {
	case err := <-r.svc.wsDone:
		if err != nil {
			t.Error(err)
		}
	case <-ctx.Done():
		t.Fatal("the service never finished its side of the WebSocket")
	}
	took := time.Since(start)
	total := int64(wsMessages * wsMessageSize)
	t.Logf("WebSocket via B: %d messages of %d KiB each way in %v, %.1f MB/s each way", wsMessages, wsMessageSize>>10, took.Round(time.Millisecond), mbps(total, took))
}

// bufferWatch samples, until stopped, Redis's output buffer for every
// pub/sub connection and its own peak figure from INFO.
type bufferWatch struct {
	rdb     *goredis.Client
	initial map[string]bool // ids of the proxies' pub/sub connections at the start
	stop    context.CancelFunc
	done    chan struct{}

	mu         sync.Mutex
	samples    int
	maxOmem    map[string]int64 // by connection id
	maxRecent  int64            // INFO clients client_recent_max_output_buffer
	sampleErrs int
}

func startBufferWatch(t *testing.T, rdb *goredis.Client) *bufferWatch {
	t.Helper()
	w := &bufferWatch{rdb: rdb, maxOmem: map[string]int64{}, done: make(chan struct{})}
	clients, err := pubsubClients(context.Background(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	w.initial = map[string]bool{}
	for _, c := range clients {
		w.initial[c["id"]] = true
	}
	if len(w.initial) != 2 {
		t.Fatalf("CLIENT LIST TYPE pubsub: %v, want the two proxies' connections", clients)
	}
	var ctx context.Context
	ctx, w.stop = context.WithCancel(context.Background())
	go w.run(ctx)
	t.Cleanup(w.halt)
	return w
}

// halt stops the sampling and waits for it. It may be called more than
// once.
func (w *bufferWatch) halt() {
	w.stop()
	<-w.done
}

func (w *bufferWatch) run(ctx context.Context) {
	defer close(w.done)
	// Redis itself tracks the peak only every clientsCron run (10 times
	// a second); sampling as often catches what it does.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		w.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (w *bufferWatch) sample(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	clients, err := pubsubClients(sctx, w.rdb)
	info, ierr := infoFields(sctx, w.rdb, "clients")
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil || ierr != nil {
		if ctx.Err() == nil {
			w.sampleErrs++
		}
		return
	}
	w.samples++
	for _, c := range clients {
		if c["name"] == spyName {
			continue
		}
		omem, _ := strconv.ParseInt(c["omem"], 10, 64)
		w.maxOmem[c["id"]] = max(w.maxOmem[c["id"]], omem)
	}
	recent, _ := strconv.ParseInt(info["client_recent_max_output_buffer"], 10, 64)
	w.maxRecent = max(w.maxRecent, recent)
}

// pubsubClients returns CLIENT LIST TYPE pubsub, one map of fields per
// connection.
func pubsubClients(ctx context.Context, rdb *goredis.Client) ([]map[string]string, error) {
	s, err := rdb.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	for line := range strings.Lines(s) {
		fields := map[string]string{}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			fields[k] = v
		}
		if len(fields) > 0 {
			out = append(out, fields)
		}
	}
	return out, nil
}

// infoFields returns one INFO section as a map.
func infoFields(ctx context.Context, rdb *goredis.Client, section string) (map[string]string, error) {
	s, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for line := range strings.Lines(s) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// checkRedis: Redis never dropped a subscriber for its output buffer and
// never came near the pub/sub limit.
func (r *streamRig) checkRedis(t *testing.T) {
	w := r.watch
	w.halt()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// The same connections as before the transfers: no disconnection, no
	// reconnection. The spy may linger a moment after closing.
	var now []map[string]string
	eventually(t, 5*time.Second, "the spy's connection is gone", func() bool {
		var err error
		now, err = pubsubClients(ctx, r.rdb)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range now {
			if c["name"] == spyName {
				return false
			}
		}
		return true
	})
	ids := map[string]bool{}
	for _, c := range now {
		ids[c["id"]] = true
	}
	if len(ids) != len(w.initial) {
		t.Errorf("pub/sub connections %v after the transfers, want the same %d as before: %v", ids, len(w.initial), now)
	}
	for id := range w.initial {
		if !ids[id] {
			t.Errorf("pub/sub connection %s is gone: a subscriber was disconnected or reconnected (now %v)", id, now)
		}
	}

	w.mu.Lock()
	samples, errs, maxRecent := w.samples, w.sampleErrs, w.maxRecent
	var maxOmem int64
	for id, m := range w.maxOmem {
		t.Logf("pub/sub connection %s: largest output buffer sampled %d bytes", id, m)
		maxOmem = max(maxOmem, m)
	}
	w.mu.Unlock()
	t.Logf("%d samples (%d failed); INFO client_recent_max_output_buffer peaked at %d bytes; ceiling %d", samples, errs, maxRecent, outputBufferCeiling)
	if samples < 10 {
		t.Errorf("only %d samples of the output buffers: the watch did not run", samples)
	}
	if maxOmem >= outputBufferCeiling {
		t.Errorf("a proxy's pub/sub connection buffered %d bytes in Redis, want < %d (pub/sub soft limit 8 MB)", maxOmem, outputBufferCeiling)
	}
	// The INFO figure covers every client, the spy's and the watcher's
	// included; none should buffer much either.
	if maxRecent >= outputBufferCeiling {
		t.Errorf("client_recent_max_output_buffer reached %d bytes, want < %d", maxRecent, outputBufferCeiling)
	}

	stats, err := infoFields(ctx, r.rdb, "stats")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := stats["client_output_buffer_limit_disconnections"]; ok {
		if v != "0" {
			t.Errorf("client_output_buffer_limit_disconnections = %s, want 0", v)
		}
	} else {
		t.Logf("this Redis has no client_output_buffer_limit_disconnections in INFO stats (added after 7.0); the connection ids and the log stand in")
	}

	f, err := os.Open(r.redisLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines++
		if strings.Contains(sc.Text(), "output buffer limits") {
			t.Errorf("redis log: %s", sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if lines == 0 {
		t.Errorf("redis log %s is empty: the check would see nothing", r.redisLog)
	}
}

// checkStreamsGone: once the transfers are over nothing of them is left.
// The proxies expose no stream count, so this checks what can be seen
// from outside: nothing was dropped or failed to publish, no public
// WebSocket is open, the goroutines settle to where they were before the
// transfers, and the next request works.
func (r *streamRig) checkStreamsGone(t *testing.T) {
	for name, reg := range map[string]*prometheus.Registry{"A": r.regA, "B": r.regB} {
		for _, m := range []string{"keyhole_bus_publish_errors_total", "keyhole_bus_publish_no_receivers_total", "keyhole_dropped_messages_total", "keyhole_bus_unrouted_messages_total"} {
			if v := metricValue(t, reg, m); v != 0 {
				t.Errorf("%s: %s = %v, want 0", name, m, v)
			}
		}
	}
	eventually(t, 5*time.Second, "B has no public WebSocket open", func() bool {
		return metricValue(t, r.regB, "keyhole_websocket_streams") == 0
	})

	r.visitor.CloseIdleConnections()
	// A couple of goroutines may come and go (pools, timers); a leaked
	// stream leaves more than that for the seven streams run here.
	var n int
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for n = runtime.NumGoroutine(); n > r.goroutines+2 && time.Now().Before(deadline); n = runtime.NumGoroutine() {
		<-tick.C
	}
	t.Logf("goroutines: %d before the transfers, %d after", r.goroutines, n)
	if n > r.goroutines+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after the transfers, %d before: streams left behind?\n%s", n, r.goroutines, buf[:runtime.Stack(buf, true)])
	}

	if code, body := r.b.Get(t, r.tun.URL+"/hello"); code != http.StatusOK || body != "hello" {
		t.Errorf("via B after the transfers: %d %q", code, body)
	}
}

// metricValue sums every series of the metric name in reg; 0 when absent.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
