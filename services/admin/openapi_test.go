package admin

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/services/registry"
)

// openAPIDocument is the part of openapi.json that the tests read.
type openAPIDocument struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
}

type openAPIOperation struct {
	OperationID string                     `json:"operationId"`
	Security    []map[string][]string      `json:"security"`
	Responses   map[string]json.RawMessage `json:"responses"`
}

// route is one pattern that routes() registers.
type route struct {
	method, path string
	open         bool // registered with open: no bearer token needed
}

func (r route) pattern() string { return r.method + " " + r.path }

// TestOpenAPIMatchesRoutes keeps the served OpenAPI document and the routes
// of the mux in step: a route added, removed or moved out of authentication
// without its documentation fails here.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	s := newOpenAPITestServer(t)

	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/openapi.json", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /v1/openapi.json: status %d", rec.Code)
	}
	var doc openAPIDocument
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}

	documented := documentedOperations(t, doc)
	code := registeredRoutes(t)

	for _, r := range code {
		// The mux must resolve the route to the pattern read from the
		// source, or the source is not what the server runs.
		if got := muxPattern(s, r.method, r.path); got != r.pattern() {
			t.Errorf("%s: the mux resolves it to %q; registeredRoutes misread routes()", r.pattern(), got)
		}
		op, ok := documented[r.pattern()]
		if !ok {
			t.Errorf("%s is registered but not documented", r.pattern())
			continue
		}
		// security: [] overrides the global bearer requirement.
		if open := op.Security != nil && len(op.Security) == 0; open != r.open {
			t.Errorf("%s: documented without authentication = %v, registered with open = %v", r.pattern(), open, r.open)
		}
	}
	for p, op := range documented {
		method, path, _ := strings.Cut(p, " ")
		if !slices.ContainsFunc(code, func(r route) bool { return r.pattern() == p }) {
			t.Errorf("%s is documented but not registered", p)
		}
		if got := muxPattern(s, method, path); got != p {
			t.Errorf("%s is documented but the mux resolves it to %q", p, got)
		}
		if op.OperationID == "" {
			t.Errorf("%s has no operationId", p)
		}
		success := false
		for status := range op.Responses {
			success = success || strings.HasPrefix(status, "2")
		}
		if !success {
			t.Errorf("%s documents no 2xx response", p)
		}
	}
}

func newOpenAPITestServer(t *testing.T) *Server {
	t.Helper()
	// pgxpool.New does not connect; nothing here reaches the database.
	pool, err := pgxpool.New(t.Context(), "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return newTestServer(t, pool, "t")
}

// newTestServer is a Server on pool, with the admin token token, whose
// background work does not run.
func newTestServer(t *testing.T, pool *pgxpool.Pool, token string) *Server {
	t.Helper()
	reg, err := registry.New(registry.Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Pool: pool, AdminToken: token, Registry: reg, Logger: testenv.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// documentedOperations returns the operations of doc by "METHOD /path".
func documentedOperations(t *testing.T, doc openAPIDocument) map[string]openAPIOperation {
	t.Helper()
	methods := []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}
	ops := map[string]openAPIOperation{}
	for path, item := range doc.Paths {
		for key, raw := range item {
			if !slices.Contains(methods, key) {
				continue // parameters, summary, description, …
			}
			var op openAPIOperation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", key, path, err)
			}
			ops[strings.ToUpper(key)+" "+path] = op
		}
	}
	if len(ops) == 0 {
		t.Fatal("openapi.json documents no operation")
	}
	return ops
}

// registeredRoutes reads the patterns that routes() in admin.go registers
// with auth(…) and open(…): http.ServeMux cannot list its patterns.
func registeredRoutes(t *testing.T) []route {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "admin.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var routes []route
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "routes" || fn.Recv == nil {
			continue
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			name, ok := call.Fun.(*ast.Ident)
			if !ok || (name.Name != "auth" && name.Name != "open") {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Fatalf("%s(…) in routes() takes a pattern that is not a string literal", name.Name)
			}
			pattern, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			method, path, ok := strings.Cut(pattern, " ")
			if !ok {
				t.Fatalf("pattern %q has no method", pattern)
			}
			routes = append(routes, route{method: method, path: path, open: name.Name == "open"})
			return true
		})
	}
	if len(routes) == 0 {
		t.Fatal("found no auth(…) or open(…) call in routes() of admin.go")
	}
	return routes
}

var wildcard = regexp.MustCompile(`\{[^}]+\}`)

// muxPattern returns the pattern the server's mux matches for method and
// path, with each {wildcard} of path replaced by a sample value.
func muxPattern(s *Server, method, path string) string {
	req := httptest.NewRequest(method, wildcard.ReplaceAllString(path, "x"), nil)
	_, pattern := s.mux.Handler(req)
	return pattern
}
