// Package jose signs the compact JWS tokens the push providers authenticate
// with: ES256 for APNs provider tokens, RS256 for Google's OAuth assertion.
// It signs only; verifying is the providers' job, and the tests verify with
// their own code so that a shared misunderstanding cannot hide.
package jose

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
)

// Header is the JOSE header; Alg is set by the signing function.
type Header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid,omitempty"`
	Typ string `json:"typ,omitempty"`
}

// ES256 returns the compact JWS of claims signed with key, a P-256 key. The
// signature is the 64-byte r||s JOSE form (RFC 7518 §3.4), not ASN.1 DER:
// APNs rejects DER signatures with InvalidProviderToken.
func ES256(key *ecdsa.PrivateKey, h Header, claims any) (string, error) {
	if key.Curve != elliptic.P256() {
		return "", errors.New("jose: ES256 needs a P-256 key")
	}
	h.Alg = "ES256"
	input, err := signingInput(h, claims)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", fmt.Errorf("jose: sign ES256: %w", err)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig[:]), nil
}

// RS256 returns the compact JWS of claims signed with key (RSASSA-PKCS1-v1_5
// with SHA-256).
func RS256(key *rsa.PrivateKey, h Header, claims any) (string, error) {
	h.Alg = "RS256"
	input, err := signingInput(h, claims)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("jose: sign RS256: %w", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

func signingInput(h Header, claims any) (string, error) {
	hb, err := json.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("jose: header: %w", err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("jose: claims: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb), nil
}

// ParsePrivateKey returns the key of the first PEM block of data: PKCS#8
// ("PRIVATE KEY", the form of Apple's .p8 files and Google's service-account
// keys), or else PKCS#1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY").
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("jose: no PEM block in key")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("jose: parse PKCS#1 key: %w", err)
		}
		return k, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("jose: parse SEC 1 key: %w", err)
		}
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("jose: parse PKCS#8 key (PEM %q): %w", block.Type, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("jose: unsupported key type %T", k)
	}
	return s, nil
}
