package apns_test

import (
	"testing"
)

// BenchmarkSend measures pushes per second through one shared Client (one
// provider token, HTTP/2 connections multiplexing concurrent streams) to a
// local APNs-like server that checks every request as the fake of the tests
// does. It measures the client and the local TLS/HTTP/2 stack, not Apple.
func BenchmarkSend(b *testing.B) {
	bb := setup(b)
	bb.fake.discard = true
	p := logout()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := bb.client.Send(b.Context(), p); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}
