package testenv

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
)

// Logs keeps the JSON records of a logger that the component's goroutines
// and the test use at once.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// NewLogs returns a logger of every level, debug included, and where its
// records go.
func NewLogs() (*slog.Logger, *Logs) {
	l := &Logs{}
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})), l
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns the records so far, one JSON object a line.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Records returns the records so far whose message is msg, decoded.
func (l *Logs) Records(t testing.TB, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split([]byte(l.String()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log record %q: %v", line, err)
		}
		if rec[slog.MessageKey] == msg {
			out = append(out, rec)
		}
	}
	return out
}
