package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/evict-dev/evict/internal/bench/report"
)

// checks runs pkg/guard's BenchmarkCheck (a live guard loaded through NATS
// with 0, 100,000 and 1,000,000 revocations; a valid and a revoked
// session; serial and b.RunParallel) with go test -cpu, in a process of its
// own: inside evict-bench, evictd, NATS and the other guards would run
// beside the benchmark and be counted in its time and allocations. It needs
// the go command and the module's source, so evict-bench runs from the
// repository root (as make bench does). Each case runs three times and
// counts with its median: a single second of benchmark is at the mercy of
// whatever else wakes up on a 2-core machine, and one such second once made
// the parallel check look as if it did not scale.
func checks(ctx context.Context, rep *report.Report, cpus []int) error {
	list := make([]string, len(cpus))
	for i, c := range cpus {
		list[i] = strconv.Itoa(c)
	}
	cmd := exec.CommandContext(ctx, "go", "test", "-run=NONE", "-bench=^BenchmarkCheck$", "-benchmem", "-count=3",
		"-cpu", strings.Join(list, ","), "./pkg/guard/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("bench: go test -bench=Check ./pkg/guard/ (run evict-bench from the repository root): %w\n%s", err, out)
	}
	cs, err := parseChecks(out)
	if err != nil {
		return err
	}
	rep.Checks = append(rep.Checks, cs...)
	return nil
}

// checkLine matches a result line of BenchmarkCheck, e.g.
// "BenchmarkCheck/entries=1000000/miss/parallel-2  35626653  40.87 ns/op  0 B/op  0 allocs/op".
// go test leaves the -N suffix out when GOMAXPROCS is 1.
var checkLine = regexp.MustCompile(`^BenchmarkCheck/entries=(\d+)/(miss|hit)(/parallel)?(?:-(\d+))?\s+\d+\s+([\d.]+) ns/op\s+(\d+) B/op\s+(\d+) allocs/op`)

// parseChecks reads the results of BenchmarkCheck from go test's output,
// one per case, in the order of their first result: the median of a case's
// results (-count), with the most allocations any of them made.
func parseChecks(out []byte) ([]report.Check, error) {
	var cs []report.Check
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := checkLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		c := report.Check{Case: m[2], Parallel: m[3] != "", CPU: 1}
		var err error
		if c.Entries, err = strconv.Atoi(m[1]); err != nil {
			return nil, fmt.Errorf("bench: %q: %w", sc.Text(), err)
		}
		if m[4] != "" {
			if c.CPU, err = strconv.Atoi(m[4]); err != nil {
				return nil, fmt.Errorf("bench: %q: %w", sc.Text(), err)
			}
		}
		if c.NsPerOp, err = strconv.ParseFloat(m[5], 64); err != nil {
			return nil, fmt.Errorf("bench: %q: %w", sc.Text(), err)
		}
		c.BytesPerOp, _ = strconv.ParseInt(m[6], 10, 64)
		c.AllocsPerOp, _ = strconv.ParseInt(m[7], 10, 64)
		cs = append(cs, c)
	}
	if len(cs) == 0 {
		return nil, fmt.Errorf("bench: no BenchmarkCheck results in:\n%s", out)
	}
	return medians(cs), nil
}

// medians merges the results of each case into one.
func medians(cs []report.Check) []report.Check {
	type key struct {
		entries  int
		name     string
		parallel bool
		cpu      int
	}
	var order []key
	runs := map[key][]report.Check{}
	for _, c := range cs {
		k := key{c.Entries, c.Case, c.Parallel, c.CPU}
		if _, ok := runs[k]; !ok {
			order = append(order, k)
		}
		runs[k] = append(runs[k], c)
	}
	out := make([]report.Check, 0, len(order))
	for _, k := range order {
		rs := runs[k]
		slices.SortFunc(rs, func(a, b report.Check) int { return cmp.Compare(a.NsPerOp, b.NsPerOp) })
		m := rs[len(rs)/2]
		for _, r := range rs {
			m.BytesPerOp, m.AllocsPerOp = max(m.BytesPerOp, r.BytesPerOp), max(m.AllocsPerOp, r.AllocsPerOp)
		}
		out = append(out, m)
	}
	return out
}
