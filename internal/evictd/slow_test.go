package evictd_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/evictd"
)

// TestSlowClients: a client that trickles its headers, or stops in the
// middle of a command's body, is cut off by the server's timeouts instead of
// holding the connection, and the half-sent command changes nothing.
func TestSlowClients(t *testing.T) {
	b := setup(t, 0, func(c *evictd.Config) {
		c.ReadHeaderTimeout, c.ReadTimeout = 300*time.Millisecond, 600*time.Millisecond
	})
	d := b.d
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	fixture, err := b.api.LogoutUser(ctx, "acme", "carol", "fixture")
	if err != nil {
		t.Fatal(err)
	}
	b.waitPublished(t)
	before := takeSnapshot(t, b)

	body := `{"users":["alice","bob"],"reason":"slow"}`
	tests := []struct {
		name string
		send string // then the client stalls
	}{
		{"headers never end", "POST /v1/tenants/acme/logout HTTP/1.1\r\nHost: evict\r\nAuthorization: Bearer " + token + "\r\n"},
		{"request line only", "POST /v1/tenants/acme/logout HTTP/1.1\r\n"},
		{"body stops halfway", "POST /v1/tenants/acme/logout HTTP/1.1\r\nHost: evict\r\nAuthorization: Bearer " + token +
			"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body[:len(body)/2]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", d.HTTPAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tc.send); err != nil {
				t.Fatal(err)
			}
			// The deadline is only there so that a server that never cuts
			// the client fails the test instead of hanging it.
			if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(conn)
			resp, err := http.ReadResponse(r, nil)
			if err == nil {
				// An answer is allowed (a 4xx for the unfinished body), a
				// success is not; then the connection must close.
				resp.Body.Close()
				if resp.StatusCode < 400 || resp.StatusCode >= 500 {
					t.Fatalf("stalled request answered %d, want a 4xx or a closed connection", resp.StatusCode)
				}
				_, err = io.Copy(io.Discard, r)
				if err != nil {
					t.Fatalf("after the answer: %v, want the connection closed", err)
				}
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the server kept the stalled connection open")
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
				var opErr *net.OpError
				if !errors.As(err, &opErr) { // a reset is a close too
					t.Fatalf("reading the answer: %v", err)
				}
			}
		})
	}
	// The server still serves, and nothing of the stalled commands landed.
	if _, err := b.api.Operation(ctx, fixture.OperationID); err != nil {
		t.Fatalf("after the slow clients: %v", err)
	}
	takeSnapshot(t, b).mustEqual(t, before)
}
