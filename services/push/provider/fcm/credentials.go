package fcm

import (
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"

	"github.com/evict-dev/evict/services/push/provider/internal/jose"
)

// defaultTokenURI is Google's token endpoint, for key files without token_uri.
const defaultTokenURI = "https://oauth2.googleapis.com/token"

// credentials is the part of a service account's JSON key file the client
// uses.
type credentials struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`

	key *rsa.PrivateKey
}

func loadCredentials(file string, data []byte) (*credentials, error) {
	switch {
	case file != "" && len(data) != 0:
		return nil, errors.New("fcm: set Config.CredentialsFile or Config.CredentialsJSON, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("fcm: read credentials: %w", err)
		}
		data = b
	case len(data) == 0:
		return nil, errors.New("fcm: Config.CredentialsFile or Config.CredentialsJSON is required")
	}
	var c credentials
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("fcm: parse credentials: %w", err)
	}
	if c.Type != "service_account" {
		return nil, fmt.Errorf("fcm: credentials of type %q, want service_account", c.Type)
	}
	if c.ClientEmail == "" || c.PrivateKey == "" {
		return nil, errors.New("fcm: credentials lack client_email or private_key")
	}
	if c.TokenURI == "" {
		c.TokenURI = defaultTokenURI
	}
	if u, err := url.Parse(c.TokenURI); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("fcm: credentials' token_uri %q is not an absolute URL", c.TokenURI)
	}
	signer, err := jose.ParsePrivateKey([]byte(c.PrivateKey))
	if err != nil {
		return nil, fmt.Errorf("fcm: credentials' private_key: %w", err)
	}
	key, ok := signer.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("fcm: credentials' private_key is %T, want RSA", signer)
	}
	c.key = key
	return &c, nil
}
