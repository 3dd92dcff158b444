package evictd

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/evict-dev/evict/services/push/provider"
	"github.com/evict-dev/evict/services/push/provider/apns"
	"github.com/evict-dev/evict/services/push/provider/fcm"
	"github.com/evict-dev/evict/services/push/provider/webhook"
)

// PushSendersFromEnv builds the push providers configured in the
// environment; none configured means no notifier.
//
//	EVICT_APNS_KEY_FILE, EVICT_APNS_KEY_ID, EVICT_APNS_TEAM_ID  APNs token auth (.p8 key); all three enable APNs
//	EVICT_APNS_TOPIC        default apns-topic (bundle id)
//	EVICT_APNS_URL          default https://api.push.apple.com (sandbox: https://api.sandbox.push.apple.com)
//	EVICT_FCM_CREDENTIALS_FILE  service-account JSON key; enables FCM
//	EVICT_FCM_URL           default https://fcm.googleapis.com
//	EVICT_WEBHOOK_URL, EVICT_WEBHOOK_SECRET  signed webhooks (secret "whsec_..."); both enable the webhook provider
func PushSendersFromEnv(log *slog.Logger) (map[string]provider.Sender, error) {
	senders := map[string]provider.Sender{}
	if keyFile := os.Getenv("EVICT_APNS_KEY_FILE"); keyFile != "" {
		c, err := apns.New(apns.Config{BaseURL: os.Getenv("EVICT_APNS_URL"), KeyFile: keyFile,
			KeyID: os.Getenv("EVICT_APNS_KEY_ID"), TeamID: os.Getenv("EVICT_APNS_TEAM_ID"),
			Topic: os.Getenv("EVICT_APNS_TOPIC"), Logger: log})
		if err != nil {
			return nil, fmt.Errorf("APNs: %w", err)
		}
		senders[c.Name()] = c
	}
	if creds := os.Getenv("EVICT_FCM_CREDENTIALS_FILE"); creds != "" {
		c, err := fcm.New(fcm.Config{CredentialsFile: creds, BaseURL: os.Getenv("EVICT_FCM_URL"), Logger: log})
		if err != nil {
			return nil, fmt.Errorf("FCM: %w", err)
		}
		senders[c.Name()] = c
	}
	if url := os.Getenv("EVICT_WEBHOOK_URL"); url != "" {
		c, err := webhook.New(webhook.Config{URL: url, Secret: os.Getenv("EVICT_WEBHOOK_SECRET")})
		if err != nil {
			return nil, fmt.Errorf("webhook: %w", err)
		}
		senders[c.Name()] = c
	}
	return senders, nil
}
