package oauth

import (
	"context"
	"testing"
)

// BenchmarkToken measures the per-request cost of handing out a valid token.
func BenchmarkToken(b *testing.B) {
	e := newEnv(b)
	e.login(b, me)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.m.Token(ctx, me); err != nil {
				b.Fatal(err)
			}
		}
	})
}
