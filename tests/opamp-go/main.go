// opamp-driver: a small OpAMP agent built on the opamp-go client library, used by
// gitamp's end-to-end tests as an independent client implementation.
//
// It connects over WebSocket (ws://, wss://) or plain HTTP (http://, https://), accepts
// remote configuration, acknowledges it (APPLYING, then APPLIED or FAILED), reports its
// effective config and health, and can be steered live through stdin. Logs go to stderr.
//
// Flags: --endpoint URL, --uid UUID|32hex (default a new UUIDv7), --label k=v (repeatable;
// service.name, service.instance.id, service.version are identifying), --header k=v
// (repeatable), --gzip, --poll-interval 1s (HTTP poll and WebSocket heartbeat),
// --fail-hash HEX, --fail-all, --unhealthy, --apply-delay 0s, --no-heartbeat-capability,
// --accepts-packages (AcceptsPackages + ReportsPackageStatuses, with the store in
// packages.go), --packages-dir DIR (default: a new temporary folder), --debug.
//
// stdin, one command a line: fail HEX | fail-all | ok | healthy | unhealthy MSG |
// label k=v | unlabel k | stop. EOF on stdin does not stop the driver; `stop`, SIGTERM and
// SIGINT do (exit 0, after {"event":"stopped"}).
//
// stdout, one JSON object a line, "event" first:
//
//	{"event":"started","uid":"<uuid>","transport":"ws|http","endpoint":"...","gzip":false}
//	{"event":"connected"}                       (WebSocket: each connection; HTTP: after a failure)
//	{"event":"connect_failed","error":"..."}
//	{"event":"disconnected","error":"..."}      (WebSocket connection broke; it reconnects)
//	{"event":"remote_config","hash":"<hex>","keys":["..."],"bytes":N}
//	{"event":"status","status":"APPLYING|APPLIED|FAILED","hash":"<hex>"[,"error":"..."]}
//	{"event":"error","type":"...","message":"..."[,"retry_after_ns":N]}  (ServerErrorResponse)
//	{"event":"new_uid","uid":"<uuid>"}
//	{"event":"command","command":"..."} / {"event":"command_error","command":"...","error":"..."}
//	{"event":"packages_offered","all_hash":"<hex>","packages":{"name":"version"}}
//	{"event":"package_status","name":"...","status":"PackageStatusEnum_...","has_version":"...",
//	 "offered_version":"..."[,"error":"..."]}   (each status the library reports, as it changes)
//	{"event":"package_installed_file","name":"...","bytes":N,"sha256":"<hex>"}
//	{"event":"packages_synced","all_hash":"<hex>"} (the library's sync of an offer finished)
//	{"event":"client_error","error":"..."}      (anything else the library logs as an error)
//	{"event":"fatal","error":"..."}             (bad setup; exit 1)
//	{"event":"stopped"}
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/client"
	"github.com/open-telemetry/opamp-go/client/types"
	"github.com/open-telemetry/opamp-go/protobufs"
)

// ---------------------------------------------------------------------------
// Event output

var outMu sync.Mutex

// emit writes one JSON line on stdout: {"event":name, k1:v1, ...}. kv alternates
// keys (strings) and values (anything json can encode). os.Stdout is unbuffered, so
// each line reaches the reader at once.
func emit(name string, kv ...any) {
	var b bytes.Buffer
	b.WriteString(`{"event":`)
	writeJSON(&b, name)
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		b.WriteByte(',')
		writeJSON(&b, k)
		b.WriteByte(':')
		writeJSON(&b, kv[i+1])
	}
	b.WriteString("}\n")
	outMu.Lock()
	defer outMu.Unlock()
	_, _ = os.Stdout.Write(b.Bytes())
}

func writeJSON(b *bytes.Buffer, v any) {
	enc, err := json.Marshal(v)
	if err != nil {
		enc, _ = json.Marshal(fmt.Sprint(v))
	}
	b.Write(enc)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000")+" opamp-driver: "+format+"\n", args...)
}

// ---------------------------------------------------------------------------
// Command line

type kvList []string

func (l *kvList) String() string { return strings.Join(*l, ",") }
func (l *kvList) Set(s string) error {
	if !strings.Contains(s, "=") {
		return fmt.Errorf("expected k=v, got %q", s)
	}
	*l = append(*l, s)
	return nil
}

// secondsOrDuration accepts a Go duration ("500ms", "2s") or a bare number of seconds ("1.5").
type secondsOrDuration struct{ d *time.Duration }

func (s secondsOrDuration) String() string {
	if s.d == nil {
		return ""
	}
	return s.d.String()
}

func (s secondsOrDuration) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		*s.d = time.Duration(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return err
	}
	*s.d = d
	return nil
}

func splitKV(s string) (string, string) {
	k, v, _ := strings.Cut(s, "=")
	return strings.TrimSpace(k), v
}

type options struct {
	endpoint     string
	uid          string
	labels       kvList
	headers      kvList
	gzip         bool
	pollInterval time.Duration
	failHash     string
	failAll      bool
	unhealthy    bool
	applyDelay   time.Duration
	noHeartbeat  bool
	packages     bool
	packagesDir  string
	debug        bool
}

func parseFlags() *options {
	o := &options{}
	fs := flag.NewFlagSet("opamp-driver", flag.ExitOnError)
	fs.StringVar(&o.endpoint, "endpoint", "ws://127.0.0.1:4320/v1/opamp", "OpAMP server URL: ws://, wss:// (WebSocket) or http://, https:// (plain HTTP)")
	fs.StringVar(&o.uid, "uid", "", "instance UID: a UUID string or 32 hex chars (default: a new UUIDv7)")
	fs.Var(&o.labels, "label", "agent attribute k=v (repeatable); service.name, service.instance.id, service.version are identifying")
	fs.Var(&o.headers, "header", "extra request header k=v (repeatable), e.g. Authorization=Bearer x")
	fs.BoolVar(&o.gzip, "gzip", false, "enable the library's compression (HTTP: gzip request bodies; WebSocket: permessage-deflate if the server agrees)")
	o.pollInterval = time.Second
	fs.Var(secondsOrDuration{&o.pollInterval}, "poll-interval", "HTTP polling interval and WebSocket heartbeat interval (a duration like 500ms, or seconds; default 1s)")
	fs.StringVar(&o.failHash, "fail-hash", "", "report FAILED for a remote config whose hash (hex) equals this")
	fs.BoolVar(&o.failAll, "fail-all", false, "report FAILED for every remote config")
	fs.BoolVar(&o.unhealthy, "unhealthy", false, "start unhealthy (last_error \"driver told to be unhealthy\")")
	fs.DurationVar(&o.applyDelay, "apply-delay", 0, "time between reporting APPLYING and APPLIED/FAILED")
	fs.BoolVar(&o.noHeartbeat, "no-heartbeat-capability", false, "do not announce ReportsHeartbeat (the library then keeps its 30s WebSocket heartbeat)")
	fs.BoolVar(&o.packages, "accepts-packages", false, "accept packages (AcceptsPackages, ReportsPackageStatuses) with the driver's package store")
	fs.StringVar(&o.packagesDir, "packages-dir", "", "where the package store writes files (default: a new temporary folder)")
	fs.BoolVar(&o.debug, "debug", false, "log the library's debug messages on stderr")
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unexpected arguments: %v\n", fs.Args())
		os.Exit(2)
	}
	if o.pollInterval <= 0 {
		fmt.Fprintln(os.Stderr, "--poll-interval must be > 0")
		os.Exit(2)
	}
	return o
}

func parseUID(s string) (types.InstanceUid, error) {
	if s == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return types.InstanceUid{}, err
		}
		return types.InstanceUid(u), nil
	}
	if b, err := hex.DecodeString(s); err == nil && len(b) == 16 {
		return types.InstanceUid(b), nil
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return types.InstanceUid{}, fmt.Errorf("invalid --uid %q: %w", s, err)
	}
	return types.InstanceUid(u), nil
}

// ---------------------------------------------------------------------------
// Library logger: stderr, and library errors are also surfaced as events.

type libLogger struct {
	debug bool
	d     *driver
}

func (l *libLogger) Debugf(_ context.Context, format string, v ...any) {
	if l.debug {
		logf("[lib debug] "+format, v...)
	}
}

func (l *libLogger) Errorf(_ context.Context, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	logf("[lib error] %s", msg)
	// The HTTP client reports a non-200, non-429/503 answer (e.g. 401) only through
	// its logger, never through OnConnectFailed: surface it as a failed connect.
	switch {
	case strings.Contains(msg, "invalid response from server"):
		l.d.connectFailed(msg)
	case strings.HasPrefix(msg, "settings.Capabilities is deprecated"):
		// Expected with --accepts-packages (see main).
	case strings.HasPrefix(msg, "Connection failed ("), strings.HasPrefix(msg, "Failed to do HTTP request ("):
		// Already reported through OnConnectFailed.
	case strings.HasPrefix(msg, "Server responded with status="):
		// A refused WebSocket upgrade (e.g. 401): OnConnectFailed only says "bad handshake".
		l.d.mu.Lock()
		l.d.connected = false
		l.d.mu.Unlock()
		emit("connect_failed", "error", msg)
	case strings.HasPrefix(msg, "Unexpected error while receiving"):
		// The WebSocket connection broke; the library reconnects by itself.
		l.d.mu.Lock()
		l.d.connected = false
		l.d.mu.Unlock()
		emit("disconnected", "error", msg)
	default:
		emit("client_error", "error", msg)
	}
}

// ---------------------------------------------------------------------------
// Driver state

var identifyingKeys = map[string]bool{
	"service.name":        true,
	"service.instance.id": true,
	"service.version":     true,
}

type driver struct {
	opts   *options
	isWS   bool
	client client.OpAMPClient

	mu          sync.Mutex
	labels      map[string]string
	failHashes  map[string]bool
	failAll     bool
	effective   map[string]*protobufs.AgentConfigFile
	connected   bool
	lastFailMsg string
	lastFailAt  time.Time

	applyCh chan *protobufs.AgentRemoteConfig
	stopped chan struct{}
}

func (d *driver) description() *protobufs.AgentDescription {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := make([]string, 0, len(d.labels))
	for k := range d.labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	desc := &protobufs.AgentDescription{}
	for _, k := range keys {
		kv := &protobufs.KeyValue{
			Key:   k,
			Value: &protobufs.AnyValue{Value: &protobufs.AnyValue_StringValue{StringValue: d.labels[k]}},
		}
		if identifyingKeys[k] {
			desc.IdentifyingAttributes = append(desc.IdentifyingAttributes, kv)
		} else {
			desc.NonIdentifyingAttributes = append(desc.NonIdentifyingAttributes, kv)
		}
	}
	return desc
}

func health(healthy bool, lastError string, start time.Time) *protobufs.ComponentHealth {
	now := uint64(time.Now().UnixNano())
	h := &protobufs.ComponentHealth{
		Healthy:            healthy,
		StartTimeUnixNano:  uint64(start.UnixNano()),
		StatusTimeUnixNano: now,
		Status:             "running",
		LastError:          lastError,
	}
	if !healthy {
		h.Status = "unhealthy"
	}
	return h
}

func (d *driver) getEffectiveConfig(context.Context) (*protobufs.EffectiveConfig, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := make(map[string]*protobufs.AgentConfigFile, len(d.effective))
	for k, f := range d.effective {
		m[k] = &protobufs.AgentConfigFile{Body: append([]byte(nil), f.GetBody()...), ContentType: f.GetContentType()}
	}
	return &protobufs.EffectiveConfig{ConfigMap: &protobufs.AgentConfigMap{ConfigMap: m}}, nil
}

func (d *driver) onConnect(context.Context) {
	d.mu.Lock()
	was := d.connected
	d.connected = true
	d.mu.Unlock()
	// The HTTP client calls OnConnect after every 200 answer: report transitions only.
	if d.isWS || !was {
		emit("connected")
	}
}

func (d *driver) connectFailed(msg string) {
	d.mu.Lock()
	d.connected = false
	// The WebSocket client reports one failed dial twice; drop the echo.
	dup := msg == d.lastFailMsg && time.Since(d.lastFailAt) < 100*time.Millisecond
	d.lastFailMsg, d.lastFailAt = msg, time.Now()
	d.mu.Unlock()
	if !dup {
		emit("connect_failed", "error", msg)
	}
}

func (d *driver) onMessage(_ context.Context, msg *types.MessageData) {
	defer recoverTo("on_message")
	if msg == nil {
		return
	}
	if msg.AgentIdentification != nil && len(msg.AgentIdentification.NewInstanceUid) == 16 {
		u, _ := uuid.FromBytes(msg.AgentIdentification.NewInstanceUid)
		emit("new_uid", "uid", u.String())
	}
	if msg.PackageSyncer != nil && msg.PackagesAvailable != nil {
		d.syncPackages(msg.PackagesAvailable, msg.PackageSyncer)
	}
	rc := msg.RemoteConfig
	if rc == nil {
		return
	}
	keys := []string{}
	n := 0
	for k, f := range rc.GetConfig().GetConfigMap() {
		keys = append(keys, k)
		n += len(f.GetBody())
	}
	sort.Strings(keys)
	emit("remote_config", "hash", hex.EncodeToString(rc.GetConfigHash()), "keys", keys, "bytes", n)
	select {
	case d.applyCh <- rc:
	case <-d.stopped:
	}
}

// syncPackages starts the library's sync of an offer; the library downloads, reports and
// calls the store. Done is awaited off the receive path.
func (d *driver) syncPackages(pa *protobufs.PackagesAvailable, syncer types.PackagesSyncer) {
	versions := map[string]string{}
	for name, p := range pa.GetPackages() {
		versions[name] = p.GetVersion()
	}
	all := hex.EncodeToString(pa.GetAllPackagesHash())
	emit("packages_offered", "all_hash", all, "packages", versions)
	if err := syncer.Sync(context.Background()); err != nil {
		emit("client_error", "error", "PackagesSyncer.Sync: "+err.Error())
		return
	}
	go func() {
		select {
		case <-syncer.Done():
			emit("packages_synced", "all_hash", all)
		case <-d.stopped:
		}
	}()
}

func (d *driver) onError(_ context.Context, e *protobufs.ServerErrorResponse) {
	if e == nil {
		return
	}
	kv := []any{"type", e.GetType().String(), "message", e.GetErrorMessage()}
	if ri := e.GetRetryInfo(); ri != nil {
		kv = append(kv, "retry_after_ns", ri.GetRetryAfterNanoseconds())
	}
	emit("error", kv...)
}

// applyLoop handles received configs one at a time, outside the library's receive path.
func (d *driver) applyLoop() {
	for {
		select {
		case rc := <-d.applyCh:
			d.apply(rc)
		case <-d.stopped:
			return
		}
	}
}

func (d *driver) setStatus(hash []byte, st protobufs.RemoteConfigStatuses, errMsg string) {
	err := d.client.SetRemoteConfigStatus(&protobufs.RemoteConfigStatus{
		LastRemoteConfigHash: hash,
		Status:               st,
		ErrorMessage:         errMsg,
	})
	if err != nil {
		emit("client_error", "error", "SetRemoteConfigStatus: "+err.Error())
		return
	}
	name := strings.TrimPrefix(st.String(), "RemoteConfigStatuses_")
	kv := []any{"status", name, "hash", hex.EncodeToString(hash)}
	if errMsg != "" {
		kv = append(kv, "error", errMsg)
	}
	emit("status", kv...)
}

func (d *driver) apply(rc *protobufs.AgentRemoteConfig) {
	defer recoverTo("apply")
	hash := rc.GetConfigHash()
	if hash == nil {
		hash = []byte{} // the library refuses a nil hash
	}
	hexHash := hex.EncodeToString(hash)

	d.setStatus(hash, protobufs.RemoteConfigStatuses_RemoteConfigStatuses_APPLYING, "")
	if d.opts.applyDelay > 0 {
		select {
		case <-time.After(d.opts.applyDelay):
		case <-d.stopped:
			return
		}
	}

	d.mu.Lock()
	fail := d.failAll || d.failHashes[hexHash]
	if !fail {
		m := make(map[string]*protobufs.AgentConfigFile)
		for k, f := range rc.GetConfig().GetConfigMap() {
			m[k] = &protobufs.AgentConfigFile{Body: append([]byte(nil), f.GetBody()...), ContentType: f.GetContentType()}
		}
		d.effective = m
	}
	d.mu.Unlock()

	if fail {
		d.setStatus(hash, protobufs.RemoteConfigStatuses_RemoteConfigStatuses_FAILED, "driver told to fail hash "+hexHash)
		return
	}
	if err := d.client.UpdateEffectiveConfig(context.Background()); err != nil {
		emit("client_error", "error", "UpdateEffectiveConfig: "+err.Error())
	}
	d.setStatus(hash, protobufs.RemoteConfigStatuses_RemoteConfigStatuses_APPLIED, "")
}

func recoverTo(where string) {
	if r := recover(); r != nil {
		logf("panic in %s: %v", where, r)
		emit("client_error", "error", fmt.Sprintf("panic in %s: %v", where, r))
	}
}

// ---------------------------------------------------------------------------
// stdin commands

func (d *driver) command(line string, start time.Time, stop func()) {
	defer recoverTo("command")
	line = strings.TrimSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return
	}
	cmd, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	switch cmd {
	case "fail":
		if arg == "" {
			emit("command_error", "command", line, "error", "fail needs a hash")
			return
		}
		d.mu.Lock()
		d.failHashes[strings.ToLower(arg)] = true
		d.mu.Unlock()
	case "fail-all":
		d.mu.Lock()
		d.failAll = true
		d.mu.Unlock()
	case "ok":
		d.mu.Lock()
		d.failAll = false
		d.failHashes = map[string]bool{}
		d.mu.Unlock()
	case "healthy":
		if err := d.client.SetHealth(health(true, "", start)); err != nil {
			emit("command_error", "command", line, "error", err.Error())
			return
		}
	case "unhealthy":
		if arg == "" {
			arg = "driver told to be unhealthy"
		}
		if err := d.client.SetHealth(health(false, arg, start)); err != nil {
			emit("command_error", "command", line, "error", err.Error())
			return
		}
	case "label", "unlabel":
		d.mu.Lock()
		if cmd == "label" {
			if !strings.Contains(arg, "=") {
				d.mu.Unlock()
				emit("command_error", "command", line, "error", "label needs k=v")
				return
			}
			k, v := splitKV(arg)
			d.labels[k] = v
		} else {
			delete(d.labels, arg)
		}
		d.mu.Unlock()
		if err := d.client.SetAgentDescription(d.description()); err != nil {
			emit("command_error", "command", line, "error", err.Error())
			return
		}
	case "stop":
		emit("command", "command", line)
		stop()
		return
	default:
		emit("command_error", "command", line, "error", "unknown command")
		return
	}
	emit("command", "command", line)
}

// ---------------------------------------------------------------------------

func main() {
	opts := parseFlags()
	start := time.Now()

	uid, err := parseUID(opts.uid)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	u, err := url.Parse(opts.endpoint)
	if err != nil || u.Host == "" {
		fmt.Fprintf(os.Stderr, "invalid --endpoint %q\n", opts.endpoint)
		os.Exit(2)
	}
	var isWS bool
	switch strings.ToLower(u.Scheme) {
	case "ws", "wss":
		isWS = true
	case "http", "https":
	default:
		fmt.Fprintf(os.Stderr, "--endpoint must be ws://, wss://, http:// or https://, got %q\n", opts.endpoint)
		os.Exit(2)
	}

	d := &driver{
		opts:       opts,
		isWS:       isWS,
		labels:     map[string]string{},
		failHashes: map[string]bool{},
		failAll:    opts.failAll,
		effective:  map[string]*protobufs.AgentConfigFile{},
		applyCh:    make(chan *protobufs.AgentRemoteConfig, 16),
		stopped:    make(chan struct{}),
	}
	if opts.failHash != "" {
		d.failHashes[strings.ToLower(opts.failHash)] = true
	}
	for _, l := range opts.labels {
		k, v := splitKV(l)
		d.labels[k] = v
	}
	if len(d.labels) == 0 {
		// The library refuses an AgentDescription without attributes.
		d.labels["service.name"] = "opamp-driver"
	}

	logger := &libLogger{debug: opts.debug, d: d}
	var c client.OpAMPClient
	if isWS {
		c = client.NewWebSocket(logger)
	} else {
		hc := client.NewHTTP(logger)
		hc.SetPollingInterval(opts.pollInterval)
		c = hc
	}
	d.client = c

	caps := protobufs.AgentCapabilities_AgentCapabilities_ReportsStatus |
		protobufs.AgentCapabilities_AgentCapabilities_AcceptsRemoteConfig |
		protobufs.AgentCapabilities_AgentCapabilities_ReportsRemoteConfig |
		protobufs.AgentCapabilities_AgentCapabilities_ReportsEffectiveConfig |
		protobufs.AgentCapabilities_AgentCapabilities_ReportsHealth
	var store *packageStore
	if opts.packages {
		dir := opts.packagesDir
		if dir == "" {
			var err error
			if dir, err = os.MkdirTemp("", "opamp-driver-packages-"); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		var err error
		if store, err = newPackageStore(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if !opts.noHeartbeat {
		// The library honours HeartbeatInterval only with this capability.
		caps |= protobufs.AgentCapabilities_AgentCapabilities_ReportsHeartbeat
	}
	fatal := func(what string, err error) {
		emit("fatal", "error", what+": "+err.Error())
		logf("%s: %v", what, err)
		os.Exit(1)
	}
	if err := c.SetAgentDescription(d.description()); err != nil {
		fatal("SetAgentDescription", err)
	}

	if opts.unhealthy {
		err = c.SetHealth(health(false, "driver told to be unhealthy", start))
	} else {
		err = c.SetHealth(health(true, "", start))
	}
	if err != nil {
		fatal("SetHealth", err)
	}
	// After SetHealth: the library refuses ReportsHealth while no health is set.
	if err := c.SetCapabilities(&caps); err != nil {
		fatal("SetCapabilities", err)
	}

	header := http.Header{}
	for _, h := range opts.headers {
		k, v := splitKV(h)
		header.Add(k, v)
	}
	interval := opts.pollInterval
	settings := types.StartSettings{
		OpAMPServerURL:    opts.endpoint,
		Header:            header,
		InstanceUid:       uid,
		EnableCompression: opts.gzip,
		HeartbeatInterval: &interval,
		Callbacks: types.Callbacks{
			OnConnect: d.onConnect,
			OnConnectFailed: func(_ context.Context, err error) {
				msg := "unknown"
				if err != nil {
					msg = err.Error()
				}
				d.connectFailed(msg)
			},
			OnError:            d.onError,
			OnMessage:          d.onMessage,
			GetEffectiveConfig: d.getEffectiveConfig,
		},
	}
	if store != nil {
		// The library takes the store only in StartSettings and checks it against the
		// capabilities there, while SetCapabilities before Start refuses the package bits
		// (no store yet): the deprecated settings.Capabilities is the one way to start with
		// both (the library's own package tests do the same).
		settings.PackagesStateProvider = store
		settings.Capabilities = caps |
			protobufs.AgentCapabilities_AgentCapabilities_AcceptsPackages |
			protobufs.AgentCapabilities_AgentCapabilities_ReportsPackageStatuses
	}

	go d.applyLoop()

	uidStr := uuid.UUID(uid).String()
	transport := "http"
	if isWS {
		transport = "ws"
	}
	emit("started", "uid", uidStr, "transport", transport, "endpoint", opts.endpoint, "gzip", opts.gzip)
	logf("instance uid %s, %s transport to %s", uidStr, transport, opts.endpoint)

	if err := c.Start(context.Background(), settings); err != nil {
		fatal("Start", err)
	}

	var stopOnce sync.Once
	done := make(chan struct{})
	stop := func() { stopOnce.Do(func() { close(done) }) }

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		logf("got %v, stopping", s)
		stop()
	}()

	go func() {
		r := bufio.NewReader(os.Stdin)
		for {
			line, err := r.ReadString('\n')
			if line != "" {
				d.command(line, start, stop)
			}
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					logf("stdin closed (%v); still running until 'stop' or a signal", err)
				}
				return
			}
		}
	}()

	<-done
	close(d.stopped)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		logf("stop: %v", err)
	}
	emit("stopped")
	os.Exit(0)
}
