// Package shared lets several Caddy instances share what each learns, through
// the Caddy storage they share (a file system on a shared disk, or a storage
// module such as Redis), without a store of the module's own (README, "More than one instance").
//
// Each instance writes one document of its own per board: when something
// changed, at once for a transition, otherwise at most once every MinWrite.
// Caddy storage has no atomic update, so nothing is read, modified and
// written back: each instance reads the others' documents, through a cache
// refreshed in the background, and combines them with what it knows itself.
// No storage I/O ever happens on a request's path.
package shared

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultRefresh  = 2 * time.Second
	DefaultMinWrite = 10 * time.Second
	// DefaultStale is how long a document that is no longer written counts:
	// its instance has stopped.
	DefaultStale = 8 * 24 * time.Hour
)

// instance names this process among those sharing a storage.
var instance = func() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// Options tune a Board.
type Options struct {
	// Refresh is how often the others' documents are read. Default 2s.
	Refresh time.Duration
	// MinWrite is the shortest time between two writes of this instance's
	// document, transitions aside. Default 10s.
	MinWrite time.Duration
	// Stale is how long an unwritten document still counts. Default 8 days.
	Stale time.Duration
}

// Board is one kind of shared facts (quota accounts, team windows) in one
// storage, as seen by one balancer of this instance.
type Board struct {
	st     certmagic.Storage
	dir    string
	self   string
	opts   Options
	logger *zap.Logger

	mu       sync.Mutex
	source   func() []byte
	onUpdate func(docs [][]byte)
	dirty    bool
	urgent   bool
	written  time.Time
	seen     map[string]time.Time // document key -> modification time read
	docs     map[string][]byte

	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	started bool
	closed  bool
	running atomic.Bool
}

// New returns a board of the documents under
// claude_balancer/shared/<kind>/ in st, for the balancer named name. Start
// starts its background work.
func New(st certmagic.Storage, kind, name string, opts Options, logger *zap.Logger) *Board {
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.MinWrite <= 0 {
		opts.MinWrite = DefaultMinWrite
	}
	if opts.Stale <= 0 {
		opts.Stale = DefaultStale
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Board{
		st: st, dir: path.Join("claude_balancer", "shared", kind), self: instance + "-" + safe(name), opts: opts,
		logger: logger, seen: map[string]time.Time{}, docs: map[string][]byte{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// safe keeps a balancer name usable in a storage key.
func safe(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, name)
}

// SetSource installs what this instance writes: source is called by the
// board's own goroutine when it writes, never on a request's path.
func (b *Board) SetSource(source func() []byte) {
	b.mu.Lock()
	b.source = source
	b.mu.Unlock()
}

// OnUpdate installs what learns the others' documents: update is called by
// the board's goroutine with every other live document after a refresh that
// found a change.
func (b *Board) OnUpdate(update func(docs [][]byte)) {
	b.mu.Lock()
	b.onUpdate = update
	b.mu.Unlock()
}

// Changed says this instance's facts changed: they are written within
// MinWrite, or at once when urgent (a transition others should learn now).
// It is cheap enough for a request's path.
func (b *Board) Changed(urgent bool) {
	b.mu.Lock()
	b.dirty = true
	if urgent && !b.urgent {
		b.urgent = true
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	b.mu.Unlock()
}

// Docs returns the other instances' documents from the cache.
func (b *Board) Docs() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([][]byte, 0, len(b.docs))
	for _, d := range b.docs {
		out = append(out, d)
	}
	return out
}

// Start starts the background work; it is cheap to call again, and does
// nothing once the board stopped.
func (b *Board) Start() {
	if b.running.Load() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return
	}
	b.started = true
	b.running.Store(true)
	go b.loop()
}

// Stop ends the background work, writing what is pending first.
func (b *Board) Stop() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	started := b.started
	b.mu.Unlock()
	if started {
		close(b.stop)
		<-b.done
	}
}

func (b *Board) loop() {
	defer close(b.done)
	tick := time.NewTicker(b.opts.Refresh)
	defer tick.Stop()
	b.refresh()
	for {
		select {
		case <-b.stop:
			b.write(true)
			return
		case <-b.wake:
			b.write(false)
		case <-tick.C:
			b.write(false)
			b.refresh()
		}
	}
}

// write stores this instance's document when it changed and MinWrite has
// passed since the last write, or a transition is pending, or force is set.
func (b *Board) write(force bool) {
	b.mu.Lock()
	now := time.Now()
	due := b.dirty && (b.urgent || force || now.Sub(b.written) >= b.opts.MinWrite)
	source := b.source
	if !due || source == nil {
		b.mu.Unlock()
		return
	}
	b.dirty, b.urgent, b.written = false, false, now
	b.mu.Unlock()
	doc := source()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.st.Store(ctx, path.Join(b.dir, b.self), doc); err != nil {
		b.logger.Warn("writing shared state failed", zap.String("dir", b.dir), zap.Error(err))
		b.mu.Lock()
		b.dirty = true
		b.mu.Unlock()
	}
}

// refresh reads the documents other instances changed since the last look.
func (b *Board) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := b.st.List(ctx, b.dir, false)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			b.logger.Debug("listing shared state failed", zap.String("dir", b.dir), zap.Error(err))
		}
		return
	}
	changed := false
	live := make(map[string]bool, len(keys))
	for _, k := range keys {
		if path.Base(k) == b.self {
			continue
		}
		info, err := b.st.Stat(ctx, k)
		if err != nil {
			continue
		}
		if time.Since(info.Modified) > b.opts.Stale {
			// Its instance stopped long ago: let it go.
			_ = b.st.Delete(ctx, k)
			continue
		}
		live[k] = true
		b.mu.Lock()
		seen := b.seen[k]
		b.mu.Unlock()
		if info.Modified.Equal(seen) {
			continue
		}
		doc, err := b.st.Load(ctx, k)
		if err != nil {
			continue
		}
		b.mu.Lock()
		b.seen[k], b.docs[k] = info.Modified, doc
		b.mu.Unlock()
		changed = true
	}
	b.mu.Lock()
	for k := range b.docs {
		if !live[k] {
			delete(b.docs, k)
			delete(b.seen, k)
			changed = true
		}
	}
	update := b.onUpdate
	b.mu.Unlock()
	if changed && update != nil {
		update(b.Docs())
	}
}
