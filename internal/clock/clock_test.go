package clock

import (
	"testing"
	"time"
)

func TestFakeRunsTimersWhenTheyComeDue(t *testing.T) {
	c := NewFake(time.Unix(0, 0))
	var fired []int
	c.AfterFunc(2*time.Second, func() { fired = append(fired, 2) })
	c.AfterFunc(time.Second, func() { fired = append(fired, 1) })
	stop := c.AfterFunc(3*time.Second, func() { fired = append(fired, 3) })
	if !stop() || stop() {
		t.Fatal("stop must report that it cancelled, once")
	}
	c.Advance(1500 * time.Millisecond)
	if len(fired) != 1 || fired[0] != 1 || c.Pending() != 1 {
		t.Fatalf("fired %v pending %d", fired, c.Pending())
	}
	c.Advance(time.Second)
	if len(fired) != 2 || c.Pending() != 0 || !c.Now().Equal(time.Unix(2, 5e8)) {
		t.Fatalf("fired %v pending %d now %v", fired, c.Pending(), c.Now())
	}
}

func TestAfterDelivers(t *testing.T) {
	c := NewFake(time.Unix(0, 0))
	ch := After(c, time.Minute)
	c.Advance(time.Minute)
	if got := <-ch; !got.Equal(time.Unix(60, 0)) {
		t.Fatalf("got %v", got)
	}
}
