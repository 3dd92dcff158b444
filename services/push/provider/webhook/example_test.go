package webhook_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/evict-dev/evict/services/push/provider/webhook"
)

// A gateway's handler checks the signature on the raw body before trusting
// anything in it, and answers 410 for a device it no longer knows so that
// evict removes the token.
func ExampleVerify() {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // from configuration, as EVICT_WEBHOOK_SECRET is
	known := map[string]bool{}
	http.HandleFunc("POST /evict", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		if err := webhook.Verify(secret, r.Header, body, time.Now(), webhook.DefaultTolerance); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev webhook.Event
		if err := json.Unmarshal(body, &ev); err != nil || ev.Type != webhook.EventType {
			http.Error(w, "unexpected event", http.StatusBadRequest)
			return
		}
		if !known[ev.Data.Token] {
			w.WriteHeader(http.StatusGone)
			return
		}
		// Deliver ev.Data.Payload to the device, once per webhook-id.
		slog.Info("logout push", "tenant", ev.Data.Payload["tenant"], "webhook_id", r.Header.Get(webhook.HeaderID))
		w.WriteHeader(http.StatusAccepted)
	})
}
