package pushtest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The service account of FCM's credentials.
const (
	FCMProject     = "evict-test"
	FCMClientEmail = "push@evict-test.iam.gserviceaccount.com"
	FCMKeyID       = "0123456789abcdef0123456789abcdef01234567"
	// FCMTokenPath is where the fake's token endpoint listens: not
	// Google's, to show that token_uri is honoured.
	FCMTokenPath = "/custom/oauth2/token"
)

// RSAKey is the service account's private key, shared by all tests:
// generating a 2048-bit key per test would dominate their run time and test
// nothing more.
var RSAKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// FCM is Google's OAuth 2.0 token endpoint and the FCM HTTP v1 send
// endpoint on one local server. The token endpoint checks the JWT-bearer
// grant (RS256 signature with RSAKey, kid, iss, scope, aud equal to the
// token URI, iat within a minute of the clock, exp an hour later) and issues
// access tokens valid 3599 s; the send endpoint checks the bearer token, the
// path and the message (unknown fields refused, as FCM does), records it and
// answers from the script. A request the real services would refuse fails
// the test.
type FCM struct {
	// Server serves both endpoints; Client trusts it.
	Server *httptest.Server
	Client *http.Client
	// TokenURI is the token endpoint's URL, as in CredentialsJSON.
	TokenURI string

	t   testing.TB
	now func() time.Time

	mu          sync.Mutex
	tokenAnswer *Answer              // replaces the token endpoint's answer when set
	issued      map[string]time.Time // access token → expiry
	fetches     int
	script      script
	sends       []FCMSend
}

// FCMSend is a message the send endpoint accepted for answering.
type FCMSend struct {
	At          time.Time // by the fake's clock
	Path        string
	AccessToken string
	Message     FCMMessage
}

// FCMMessage mirrors the v1 Message fields a client may use.
type FCMMessage struct {
	Token   string            `json:"token"`
	Data    map[string]string `json:"data"`
	Android struct {
		Priority    string `json:"priority"`
		CollapseKey string `json:"collapse_key"`
		TTL         string `json:"ttl"`
	} `json:"android"`
	APNS struct {
		Headers map[string]string `json:"headers"`
		Payload map[string]any    `json:"payload"`
	} `json:"apns"`
}

// NewFCM starts the endpoints until the test ends; now is their clock.
func NewFCM(tb testing.TB, now func() time.Time) *FCM {
	tb.Helper()
	f := &FCM{t: tb, now: now, issued: map[string]time.Time{}, script: script{}}
	f.Server, f.Client = Start(tb, f)
	f.TokenURI = f.Server.URL + FCMTokenPath
	return f
}

// CredentialsJSON is a service-account key file for the fake: its token_uri
// is TokenURI.
func (f *FCM) CredentialsJSON() []byte {
	f.t.Helper()
	return FCMCredentials(f.t, f.TokenURI)
}

// FCMCredentials is a service-account key file with RSAKey, FCMProject,
// FCMClientEmail and FCMKeyID, whose token_uri is tokenURI.
func FCMCredentials(tb testing.TB, tokenURI string) []byte {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(RSAKey())
	if err != nil {
		tb.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type":                        "service_account",
		"project_id":                  FCMProject,
		"private_key_id":              FCMKeyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                FCMClientEmail,
		"client_id":                   "123456789012345678901",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   tokenURI,
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"universe_domain":             "googleapis.com",
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Reply sets the answers to messages for the registration token token (""
// for every token without answers of its own).
func (f *FCM) Reply(token string, answers ...Answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script[token] = answers
}

// ReplyToken makes the token endpoint answer a (nil: issue tokens).
func (f *FCM) ReplyToken(a *Answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokenAnswer = a
}

// Stats returns how many access tokens were fetched and the messages
// received, in order.
func (f *FCM) Stats() (fetches int, sends []FCMSend) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches, append([]FCMSend(nil), f.sends...)
}

// FCMError is the body of an FCM error reply: a google.rpc.Status with an
// FcmError detail when errorCode is set, and the extra details given.
func FCMError(code int, status, msg, errorCode string, extra ...string) string {
	details := []string{}
	if errorCode != "" {
		details = append(details, fmt.Sprintf(`{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":%q}`, errorCode))
	}
	details = append(details, extra...)
	return fmt.Sprintf(`{"error":{"code":%d,"message":%q,"status":%q,"details":[%s]}}`, code, msg, status, strings.Join(details, ","))
}

func (f *FCM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == FCMTokenPath {
		f.serveToken(w, r)
		return
	}
	f.serveSend(w, r)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"error_description":%q}`, code, desc)
}

func (f *FCM) serveToken(w http.ResponseWriter, r *http.Request) {
	t := f.t
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("token: %s with Content-Type %q, want a form POST", r.Method, r.Header.Get("Content-Type"))
		oauthError(w, 400, "invalid_request", "bad request")
		return
	}
	if err := r.ParseForm(); err != nil {
		t.Errorf("token: form: %v", err)
	}
	if gt := r.PostForm.Get("grant_type"); gt != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		t.Errorf("token: grant_type %q", gt)
		oauthError(w, 400, "unsupported_grant_type", "Invalid grant_type: "+gt)
		return
	}
	claims, err := f.verifyAssertion(r.PostForm.Get("assertion"))
	if err != nil {
		t.Errorf("token: assertion: %v", err)
		oauthError(w, 400, "invalid_grant", "Invalid JWT Signature.")
		return
	}
	iat, exp := int64(claims["iat"].(float64)), int64(claims["exp"].(float64))
	if now := f.now().Unix(); iat > now+60 || iat < now-60 {
		oauthError(w, 400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
		t.Errorf("token: iat %d, clock %d", iat, now)
		return
	}
	if exp-iat != 3600 {
		t.Errorf("token: exp - iat = %d, want 3600", exp-iat)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	if a := f.tokenAnswer; a != nil {
		if a.RetryAfter != "" {
			w.Header().Set("Retry-After", a.RetryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.Status)
		fmt.Fprint(w, a.Body)
		return
	}
	tok := "ya29.test-" + strconv.Itoa(f.fetches)
	f.issued[tok] = f.now().Add(3599 * time.Second)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"expires_in":3599,"token_type":"Bearer"}`, tok)
}

// verifyAssertion checks an RS256 JWT the way Google's token endpoint does
// and returns its claims.
func (f *FCM) verifyAssertion(jwt string) (map[string]any, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%d parts, want 3", len(parts))
	}
	var header, claims map[string]any
	if err := DecodeJWTSegment(parts[0], &header); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if want := map[string]any{"alg": "RS256", "typ": "JWT", "kid": FCMKeyID}; !reflect.DeepEqual(header, want) {
		return nil, fmt.Errorf("header %v, want %v", header, want)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&RSAKey().PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return nil, fmt.Errorf("RS256 signature: %w", err)
	}
	if err := DecodeJWTSegment(parts[1], &claims); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	want := map[string]any{
		"iss":   FCMClientEmail,
		"scope": "https://www.googleapis.com/auth/firebase.messaging",
		"aud":   f.TokenURI,
	}
	for k, v := range want {
		if claims[k] != v {
			return nil, fmt.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	if _, ok := claims["iat"].(float64); !ok {
		return nil, fmt.Errorf("iat %v", claims["iat"])
	}
	if _, ok := claims["exp"].(float64); !ok {
		return nil, fmt.Errorf("exp %v", claims["exp"])
	}
	if len(claims) != 5 {
		return nil, fmt.Errorf("claims %v, want iss, scope, aud, iat, exp", claims)
	}
	return claims, nil
}

// DecodeJWTSegment decodes one base64url segment of a compact JWS into v,
// for the tests' own verifiers.
func DecodeJWTSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func fcmError(w http.ResponseWriter, status int, grpcStatus, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%d,"message":%q,"status":%q}}`, status, msg, grpcStatus)
}

var sendPath = regexp.MustCompile(`^/v1/projects/([a-z][a-z0-9-]{4,28}[a-z0-9])/messages:send$`)
var ttlFormat = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,9})?s$`)

func (f *FCM) serveSend(w http.ResponseWriter, r *http.Request) {
	t := f.t
	if r.Method != http.MethodPost || !sendPath.MatchString(r.URL.Path) {
		t.Errorf("send: %s %s", r.Method, r.URL.Path)
		fcmError(w, 404, "NOT_FOUND", "no such method")
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	exp, issued := f.issued[tok]
	f.mu.Unlock()
	if !ok || !issued || !f.now().Before(exp) {
		fcmError(w, 401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("send: Content-Type %q", ct)
	}
	var body struct {
		Message FCMMessage `json:"message"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Errorf("send: body: %v", err)
		fcmError(w, 400, "INVALID_ARGUMENT", "Invalid JSON payload received. "+err.Error())
		return
	}
	m := body.Message
	switch {
	case m.Token == "":
		t.Errorf("send: no token")
	case m.Android.Priority != "HIGH" && m.Android.Priority != "NORMAL":
		t.Errorf("send: android.priority %q", m.Android.Priority)
	case m.Android.TTL != "" && !ttlFormat.MatchString(m.Android.TTL):
		t.Errorf("send: android.ttl %q", m.Android.TTL)
	}

	f.mu.Lock()
	f.sends = append(f.sends, FCMSend{At: f.now(), Path: r.URL.Path, AccessToken: tok, Message: m})
	a := f.script.next(m.Token)
	f.mu.Unlock()
	if a.Status == 0 || a.Status == 200 {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"name":"projects/%s/messages/0:1700000000000000%%abc"}`, sendPath.FindStringSubmatch(r.URL.Path)[1])
		return
	}
	if a.RetryAfter != "" {
		w.Header().Set("Retry-After", a.RetryAfter)
	}
	w.WriteHeader(a.Status)
	fmt.Fprint(w, a.Body)
}
