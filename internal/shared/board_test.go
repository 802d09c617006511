package shared

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// twoInstances makes two boards on one storage as two processes would have
// them.
func twoInstances(t *testing.T, opts Options) (a, b *Board) {
	st := &certmagic.FileStorage{Path: t.TempDir()}
	a = New(st, "quota", "default", opts, nil)
	b = New(st, "quota", "default", opts, nil)
	b.self = "other-instance-default"
	t.Cleanup(a.Stop)
	t.Cleanup(b.Stop)
	return a, b
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestATransitionReachesTheOtherInstanceWithinARefresh(t *testing.T) {
	a, b := twoInstances(t, Options{Refresh: 50 * time.Millisecond, MinWrite: time.Hour})
	var doc atomic.Value
	doc.Store([]byte(`{"v":1}`))
	a.SetSource(func() []byte { return doc.Load().([]byte) })
	var (
		mu  sync.Mutex
		got []string
	)
	b.OnUpdate(func(docs [][]byte) {
		mu.Lock()
		defer mu.Unlock()
		got = got[:0]
		for _, d := range docs {
			got = append(got, string(d))
		}
	})
	a.Start()
	b.Start()
	a.Changed(true)
	waitFor(t, "the first document", 2*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1 && got[0] == `{"v":1}`
	})
	// A reading that is not a transition waits for MinWrite (an hour here).
	doc.Store([]byte(`{"v":2}`))
	a.Changed(false)
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	if got[0] != `{"v":1}` {
		t.Fatalf("a reading was written before MinWrite: %v", got)
	}
	mu.Unlock()
	// A transition goes at once.
	doc.Store([]byte(`{"v":3}`))
	a.Changed(true)
	waitFor(t, "the transition", 2*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1 && got[0] == `{"v":3}`
	})
}

func TestReadingsAreWrittenAtMostEveryMinWrite(t *testing.T) {
	st := &countingStorage{FileStorage: certmagic.FileStorage{Path: t.TempDir()}}
	a := New(st, "quota", "default", Options{Refresh: 20 * time.Millisecond, MinWrite: 300 * time.Millisecond}, nil)
	a.SetSource(func() []byte { return []byte("x") })
	a.Start()
	defer a.Stop()
	t0 := time.Now()
	for time.Since(t0) < time.Second {
		a.Changed(false)
		time.Sleep(5 * time.Millisecond)
	}
	if n := st.stores.Load(); n < 2 || n > 5 {
		t.Fatalf("%d writes in a second with MinWrite 300ms", n)
	}
}

func TestStopWritesWhatIsPending(t *testing.T) {
	st := &certmagic.FileStorage{Path: t.TempDir()}
	a := New(st, "quota", "default", Options{MinWrite: time.Hour}, nil)
	a.SetSource(func() []byte { return []byte("last words") })
	a.Start()
	a.Changed(false)
	a.Stop()
	b, err := st.Load(context.Background(), "claude_balancer/shared/quota/"+a.self)
	if err != nil || string(b) != "last words" {
		t.Fatalf("%q %v", b, err)
	}
}

type countingStorage struct {
	certmagic.FileStorage
	stores atomic.Int64
}

func (s *countingStorage) Store(ctx context.Context, key string, value []byte) error {
	s.stores.Add(1)
	return s.FileStorage.Store(ctx, key, value)
}
