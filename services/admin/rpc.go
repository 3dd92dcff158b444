package admin

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/keys"
)

// Session lifecycle over NATS, for holders that embed pkg/guard: the guard
// registers and ends sessions with its NATS credential instead of an admin
// token, on events.RPCSubject, which names the tenant (so that NATS
// permissions bind a guard credential to its tenants). Each request is
// answered by one evictd replica (queue group).
const (
	rpcQueue = "evictd"
	// RPCStatusHeader carries the HTTP status of the answer.
	RPCStatusHeader = "Evict-Status"
	// RPCSessionHeader and RPCInstanceHeader address a request.
	RPCSessionHeader  = "Evict-Session"
	RPCInstanceHeader = "Evict-Instance"
)

type preauthKey struct{}

// ServeNATS answers session registrations and ends sent by guards until ctx
// ends. A request is served by the same handler as the HTTP API (same
// validation, same transaction), as the actor "guard:<instance>".
func (s *Server) ServeNATS(ctx context.Context, nc *nats.Conn) error {
	var wg sync.WaitGroup
	handle := func(method string) nats.MsgHandler {
		return func(m *nats.Msg) {
			wg.Add(1)
			defer wg.Done()
			s.serveRPC(ctx, m, method)
		}
	}
	subs := make([]*nats.Subscription, 0, 2)
	for op, method := range map[string]string{"register": http.MethodPost, "end": http.MethodDelete} {
		subject := events.RPCPrefix + "*." + op
		sub, err := nc.QueueSubscribe(subject, rpcQueue, handle(method))
		if err != nil {
			return fmt.Errorf("admin: subscribe %s: %w", subject, err)
		}
		subs = append(subs, sub)
	}
	<-ctx.Done()
	for _, sub := range subs {
		_ = sub.Drain()
	}
	wg.Wait()
	return nil
}

func (s *Server) serveRPC(ctx context.Context, m *nats.Msg, method string) {
	reply := func(status int, body []byte) {
		out := nats.NewMsg(m.Reply)
		out.Header.Set(RPCStatusHeader, strconv.Itoa(status))
		out.Data = body
		_ = m.RespondMsg(out)
	}
	// The tenant is the subject's, the one the sender's permissions allowed.
	tenant, _, _ := strings.Cut(strings.TrimPrefix(m.Subject, events.RPCPrefix), ".")
	instance := m.Header.Get(RPCInstanceHeader)
	for field, v := range map[string]string{"tenant": tenant, "instance": instance} {
		if err := events.CheckID(field, v); err != nil {
			rec := httptest.NewRecorder()
			s.writeError(rec, httptest.NewRequest(method, "/", nil), err)
			reply(rec.Code, rec.Body.Bytes())
			return
		}
	}
	path := "/v1/tenants/" + tenant + "/sessions"
	if method == http.MethodDelete {
		session := m.Header.Get(RPCSessionHeader)
		if err := events.CheckID("session", session); err != nil {
			rec := httptest.NewRecorder()
			s.writeError(rec, httptest.NewRequest(method, "/", nil), err)
			reply(rec.Code, rec.Body.Bytes())
			return
		}
		path += "/" + session
	}
	req, err := http.NewRequestWithContext(ctx, method, path, bytes.NewReader(m.Data))
	if err != nil {
		reply(http.StatusBadRequest, nil)
		return
	}
	req.RemoteAddr = "nats:0"
	if len(m.Data) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	// The guard's NATS credential is the authority here (its permissions
	// decide which subjects it may use at all).
	p := principal{name: "guard:" + instance, role: keys.RoleAdmin, allTenants: true}
	req = req.WithContext(context.WithValue(withPrincipal(ctx, p), preauthKey{}, true))
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	reply(rec.Code, rec.Body.Bytes())
}

// preauthenticated reports whether the request came through ServeNATS,
// whose NATS credential stands in for the bearer token.
func preauthenticated(r *http.Request) bool {
	ok, _ := r.Context().Value(preauthKey{}).(bool)
	return ok
}
