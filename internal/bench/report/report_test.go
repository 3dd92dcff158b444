package report_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/bench/report"
	"github.com/evict-dev/evict/internal/bench/stats"
)

func sample() *report.Report {
	r := &report.Report{Started: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), Machine: report.Machine{Cores: 2}}
	r.Add(report.Row{Scenario: "floor", Name: "floor A", Summary: stats.Summary{N: 10, P50: time.Millisecond, P99: 2 * time.Millisecond}})
	r.Add(report.Row{Scenario: "end to end", Name: "e2e <10 guards>", Floor: "floor A",
		Summary: stats.Summary{N: 10, P50: 1500 * time.Microsecond, P99: 8 * time.Millisecond, PerSecond: 1000},
		Extra:   []report.Metric{{Name: "events", Value: 12345, Unit: "events/s"}}})
	r.Add(report.Row{Scenario: "baseline", Name: "no floor", Floor: "missing", Summary: stats.Summary{N: 1, P50: time.Second}})
	r.Checks = []report.Check{{Entries: 1_000_000, Case: "miss", CPU: 1, NsPerOp: 42.5}}
	r.Targets = []report.Target{{Name: "fast", Want: "≤ 1 ms", Got: "1.5 ms", Met: false}, {Name: "small", Want: "≤ 100 B", Got: "50 B", Met: true}}
	r.Curves = []report.Curve{{Name: "e2e <10 guards>", Points: []stats.Point{{Value: time.Millisecond, Fraction: .5}, {Value: 8 * time.Millisecond, Fraction: 1}}}}
	return r
}

func TestAddComputesRatiosToTheFloor(t *testing.T) {
	t.Parallel()
	r := sample()
	tests := []struct {
		name     string
		p50, p99 float64
	}{
		{"floor A", 0, 0},
		{"e2e <10 guards>", 1.5, 4},
		{"no floor", 0, 0}, // its floor was not measured: no ratio rather than a wrong one
	}
	for _, tc := range tests {
		row, ok := r.Find(tc.name)
		if !ok {
			t.Fatalf("row %q missing", tc.name)
		}
		if row.RatioP50 != tc.p50 || row.RatioP99 != tc.p99 {
			t.Errorf("%s: ratios %v, %v; want %v, %v", tc.name, row.RatioP50, row.RatioP99, tc.p50, tc.p99)
		}
	}
}

func TestDur(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "–"},
		{42 * time.Nanosecond, "42 ns"},
		{1234 * time.Nanosecond, "1.23 µs"},
		{999 * time.Microsecond, "999 µs"},
		{1500 * time.Microsecond, "1.50 ms"},
		{12345 * time.Microsecond, "12.3 ms"},
		{9876 * time.Millisecond, "9.88 s"},
	}
	for _, tc := range tests {
		if got := report.Dur(tc.d).String(); got != tc.want {
			t.Errorf("Dur(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestMarkdown(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := sample().Markdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| fast | ≤ 1 ms | 1.5 ms | **no** |",
		"| small | ≤ 100 B | 50 B | yes |",
		"| end to end | e2e <10 guards><br><sub>floor: floor A</sub> | 10 | 1.50 ms | 8.00 ms | – | 1,000 | 1.50× | 4.00× |",
		"| e2e <10 guards> | events | 12,345 events/s |",
		"| 1,000,000 | miss, serial | 1 | 42.5 | 0 | 0 |",
		"![latency distributions](latency.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
}

// TestWriteDir checks that the three files are written and well formed:
// JSON that reads back, and SVG that is XML (names are escaped).
func TestWriteDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "results")
	if err := sample().WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back report.Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("report.json: %v", err)
	}
	if len(back.Rows) != 3 || back.Rows[1].RatioP99 != 4 {
		t.Errorf("report.json read back with rows %+v", back.Rows)
	}
	svg, err := os.ReadFile(filepath.Join(dir, report.PlotFile))
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	polylines := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s is not XML: %v", report.PlotFile, err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			polylines++
		}
	}
	if polylines != 1 {
		t.Errorf("plot has %d curves, want 1", polylines)
	}
	if _, err := os.Stat(filepath.Join(dir, "report.md")); err != nil {
		t.Error(err)
	}
}
