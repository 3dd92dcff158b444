# evict: run `make run` to start evictd (embedded NATS), `make test` to test.
GO ?= go
PKGS := ./...

.PHONY: run demo test test-race bench bench-full bench-smoke lint fuzz build tools

## run: start evictd with embedded NATS JetStream and the local PostgreSQL
run:
	$(GO) run ./cmd/evictd

## demo: start the demo web backend against a running evictd
demo:
	$(GO) run ./cmd/evict-demo

## build: build every binary into bin/
build:
	$(GO) build -o bin/ ./cmd/...

## test: vet, then every test, with the race detector, against real PostgreSQL and embedded NATS
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## fuzz: run each fuzz target briefly (FUZZTIME=100000x executions by default).
# A count, not a duration: a duration can end the run while the fuzzer
# minimizes a new input, which Go reports as a spurious "context deadline
# exceeded" failure.
FUZZTIME ?= 100000x
fuzz:
	$(GO) test -run=NONE -fuzz=FuzzCheckID -fuzztime=$(FUZZTIME) ./events/
	$(GO) test -run=NONE -fuzz=FuzzParseStateSubject -fuzztime=$(FUZZTIME) ./events/
	$(GO) test -run=NONE -fuzz=FuzzDecodeRevocation -fuzztime=$(FUZZTIME) ./events/
	$(GO) test -run=NONE -fuzz=FuzzDecodeUsersRevoked -fuzztime=$(FUZZTIME) ./events/
	$(GO) test -run=NONE -fuzz=FuzzCheckStrictJSON -fuzztime=$(FUZZTIME) ./services/admin/
	$(GO) test -run=NONE -fuzz=FuzzRequestDecoders -fuzztime=$(FUZZTIME) ./services/admin/
	$(GO) test -run=NONE -fuzz=FuzzReadHeader -fuzztime=$(FUZZTIME) ./internal/snapshot/

## bench: evict-bench with small sizes (results in bench-results/), then the
# Go benchmarks it does not cover: revset lookups and the guard check with
# the table out of cache, session listing at 1M sessions, pushes.
# BENCHFLAGS adds flags.
bench:
	$(GO) run ./cmd/evict-bench $(BENCHFLAGS)
	$(GO) test -run=NONE -bench=Get -benchmem -cpu 1,2 ./pkg/guard/internal/revset/
	$(GO) test -run=NONE -bench=CheckSpread -benchtime=3s -count=3 ./pkg/guard/
	$(GO) test -run=NONE -bench=TenantListing -benchtime=200x ./internal/evictd/
	$(GO) test -run=NONE -bench=TenantPush -benchtime=3x ./internal/evictd/
	$(GO) test -run=NONE -bench=Send -benchtime=3s ./services/push/provider/apns/

## bench-full: evict-bench at the sizes of docs/benchmarks.md, report in docs/bench/
bench-full:
	$(GO) run ./cmd/evict-bench -bulk-users 100000 -tenant-sessions 1000000 -disconnect 60s -duration 10s -out docs/bench $(BENCHFLAGS)

## bench-smoke: every Go benchmark once, and evict-bench at tiny sizes
# (its check scenario is BenchmarkCheck, run by the first line), so that
# neither breaks unseen between bench runs; CI runs it. The figures mean
# nothing at these sizes.
bench-smoke:
	$(GO) test -run=NONE -bench=. -benchtime=1x $(PKGS)
	$(GO) run ./cmd/evict-bench -only floor,e2e,bulk,tenant,baseline,cold -rate 200 -duration 1s -warmup 200ms \
		-burst 20 -guards 1,2 -fleet 2 -bulk-users 100 -tenant-sessions 1000 -tenant-logouts 5 -cold-entries 10000 \
		-cold-runs 1 -disconnect 1s -catchup-rate 20 -lookups 100 -cache-refresh 1s -cache-duration 2s -cache-rate 20 \
		-out bench-results/smoke

## lint: gofmt, go vet and staticcheck (pinned in go.mod as a tool)
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
