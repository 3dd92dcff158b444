// Package report holds the results of an evict-bench run and renders them:
// a table for the terminal, JSON for tools, Markdown for docs, and an SVG
// plot of the latency distributions.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/evict-dev/evict/internal/bench/stats"
)

// Report is one run of evict-bench.
type Report struct {
	Started  time.Time     `json:"started"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	Machine  Machine       `json:"machine"`
	Versions Versions      `json:"versions"`
	// Settings are the run's sizes and rates, by flag name.
	Settings map[string]string `json:"settings"`
	Rows     []Row             `json:"rows"`
	Checks   []Check           `json:"guard_checks"`
	Targets  []Target          `json:"targets"`
	// Curves are the latency distributions the plot shows.
	Curves []Curve  `json:"curves"`
	Notes  []string `json:"notes,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	Cores       int    `json:"cores"`
	CPU         string `json:"cpu"`
	MemoryBytes int64  `json:"memory_bytes"`
	OS          string `json:"os"`
}

// Versions of what was measured.
type Versions struct {
	Go         string `json:"go"`
	PostgreSQL string `json:"postgresql"`
	// PostgreSQLSettings are the server settings that change the
	// figures: autovacuum, fsync, synchronous_commit, shared_buffers.
	PostgreSQLSettings string `json:"postgresql_settings"`
	NATSServer         string `json:"nats_server"`
	NATSClient         string `json:"nats_client"`
	PGX                string `json:"pgx"`
	Commit             string `json:"commit"`
}

// Row is one measured latency figure.
type Row struct {
	// Scenario groups rows: "floor", "end-to-end", "bulk", ...
	Scenario string        `json:"scenario"`
	Name     string        `json:"name"`
	Summary  stats.Summary `json:"summary"`
	// Floor names the floor row this one is compared with ("" for none);
	// RatioP50 and RatioP99 are this row's p50 and p99 over the floor's.
	Floor    string  `json:"floor,omitempty"`
	RatioP50 float64 `json:"ratio_p50,omitempty"`
	RatioP99 float64 `json:"ratio_p99,omitempty"`
	// Extra holds figures that are not latencies, e.g. events per second.
	Extra []Metric `json:"extra,omitempty"`
}

// Metric is a named figure with its unit.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Check is one Go benchmark of the guard's per-request check.
type Check struct {
	Entries     int     `json:"entries"`
	Case        string  `json:"case"` // "miss" (a valid session) or "hit" (a revoked one)
	Parallel    bool    `json:"parallel"`
	CPU         int     `json:"cpu"` // GOMAXPROCS
	NsPerOp     float64 `json:"ns_per_op"`
	AllocsPerOp int64   `json:"allocs_per_op"`
	BytesPerOp  int64   `json:"bytes_per_op"`
}

// Target is one of the targets and whether the run met it.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// Curve is a latency distribution to plot.
type Curve struct {
	Name   string        `json:"name"`
	Points []stats.Point `json:"points"`
}

// Find returns the row named name and whether there is one.
func (r *Report) Find(name string) (Row, bool) {
	for _, row := range r.Rows {
		if row.Name == name {
			return row, true
		}
	}
	return Row{}, false
}

// Add appends a row, computing its ratios to the floor row it names.
func (r *Report) Add(row Row) {
	if f, ok := r.Find(row.Floor); ok && row.Floor != "" {
		row.RatioP50 = ratio(row.Summary.P50, f.Summary.P50)
		row.RatioP99 = ratio(row.Summary.P99, f.Summary.P99)
	}
	r.Rows = append(r.Rows, row)
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// WriteDir writes report.json, report.md and latency.svg into dir.
func (r *Report) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("report: encode: %w", err)
	}
	files := []struct {
		name  string
		write func(io.Writer) error
	}{
		{"report.json", func(w io.Writer) error { _, err := w.Write(append(b, '\n')); return err }},
		{"report.md", r.Markdown},
		{PlotFile, r.SVG},
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(dir, f.name), f.write); err != nil {
			return err
		}
	}
	return nil
}

// PlotFile is the name of the plot in a results folder.
const PlotFile = "latency.svg"

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// Table writes the rows, the guard checks and the targets as aligned text.
func (r *Report) Table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tmeasure\tn\tp50\tp99\tmax\tper s\t×floor p50\t×floor p99\t")
	for _, row := range r.Rows {
		s := row.Summary
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", row.Scenario, row.Name, s.N,
			Dur(s.P50), Dur(s.P99), Dur(s.Max), rate(s.PerSecond), times(row.RatioP50), times(row.RatioP99))
		for _, m := range row.Extra {
			fmt.Fprintf(tw, "\t  %s\t\t\t\t\t%s %s\t\t\t\n", m.Name, Num(m.Value), m.Unit)
		}
	}
	fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t")
	fmt.Fprintln(tw, "guard check\tcase\tGOMAXPROCS\tns/op\tallocs/op\t\t\t\t\t")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s entries\t%s\t%d\t%.1f\t%d\t\t\t\t\t\n", Num(float64(c.Entries)), c.name(), c.CPU, c.NsPerOp, c.AllocsPerOp)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\twant\tgot\tmet")
	for _, t := range r.Targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Want, t.Got, yesNo(t.Met))
	}
	return tw.Flush()
}

func (c Check) name() string {
	if c.Parallel {
		return c.Case + ", parallel"
	}
	return c.Case + ", serial"
}

// Markdown writes the report as a Markdown document that links the plot.
func (r *Report) Markdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# evict-bench report\n\n")
	pg := r.Versions.PostgreSQL
	if r.Versions.PostgreSQLSettings != "" {
		pg += " (" + r.Versions.PostgreSQLSettings + ")"
	}
	fmt.Fprintf(&b, "Run %s, %s. Machine: %d cores (%s), %s RAM, %s. Go %s, PostgreSQL %s, nats-server %s, nats.go %s, pgx %s, commit %s.\n\n",
		r.Started.UTC().Format(time.RFC3339), Dur(r.Elapsed).Round(), r.Machine.Cores, r.Machine.CPU, bytesIEC(r.Machine.MemoryBytes), r.Machine.OS,
		r.Versions.Go, pg, r.Versions.NATSServer, r.Versions.NATSClient, r.Versions.PGX, r.Versions.Commit)
	if len(r.Settings) > 0 {
		b.WriteString("Settings:")
		for i, k := range sortedKeys(r.Settings) {
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(&b, "%s `-%s=%s`", sep, k, r.Settings[k])
		}
		b.WriteString(".\n\n")
	}
	b.WriteString("## Targets\n\n| target | want | got | met |\n| --- | --- | --- | --- |\n")
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Want, t.Got, yesNo(t.Met))
	}
	b.WriteString("\n## Latency and throughput\n\n")
	b.WriteString("Latencies count from the time each operation was due (open loop). ×floor is the ratio to the floor row named under it.\n\n")
	b.WriteString("| scenario | measure | n | p50 | p99 | max | per s | ×floor p50 | ×floor p99 |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, row := range r.Rows {
		s := row.Summary
		name := row.Name
		if row.Floor != "" {
			name += "<br><sub>floor: " + row.Floor + "</sub>"
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", row.Scenario, name, s.N,
			Dur(s.P50), Dur(s.P99), Dur(s.Max), rate(s.PerSecond), times(row.RatioP50), times(row.RatioP99))
	}
	extras := false
	for _, row := range r.Rows {
		for _, m := range row.Extra {
			if !extras {
				b.WriteString("\n| measure | figure | value |\n| --- | --- | ---: |\n")
				extras = true
			}
			fmt.Fprintf(&b, "| %s | %s | %s %s |\n", row.Name, m.Name, Num(m.Value), m.Unit)
		}
	}
	if len(r.Checks) > 0 {
		b.WriteString("\n## Guard check\n\n| entries | case | GOMAXPROCS | ns/op | allocs/op | B/op |\n| ---: | --- | ---: | ---: | ---: | ---: |\n")
		for _, c := range r.Checks {
			fmt.Fprintf(&b, "| %s | %s | %d | %.1f | %d | %d |\n", Num(float64(c.Entries)), c.name(), c.CPU, c.NsPerOp, c.AllocsPerOp, c.BytesPerOp)
		}
	}
	fmt.Fprintf(&b, "\n## Distributions\n\n![latency distributions](%s)\n", PlotFile)
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// D is a duration that prints with three significant digits.
type D time.Duration

// Dur converts a duration for printing.
func Dur(d time.Duration) D { return D(d) }

// Round drops the digits below a millisecond of durations over a second.
func (d D) Round() D {
	if time.Duration(d) > time.Second {
		return D(time.Duration(d).Round(time.Millisecond))
	}
	return d
}

func (d D) String() string {
	v := time.Duration(d)
	switch {
	case v <= 0:
		return "–"
	case v < time.Microsecond:
		return fmt.Sprintf("%d ns", v.Nanoseconds())
	case v < time.Millisecond:
		return sig3(float64(v)/1e3) + " µs"
	case v < time.Second:
		return sig3(float64(v)/1e6) + " ms"
	}
	return sig3(v.Seconds()) + " s"
}

// sig3 formats v (>= 1) with three significant digits.
func sig3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func rate(v float64) string {
	if v <= 0 {
		return "–"
	}
	return Num(v)
}

func times(v float64) string {
	if v <= 0 {
		return "–"
	}
	if v >= 100 {
		return Num(v) + "×"
	}
	return fmt.Sprintf("%.2f×", v)
}

// Num formats v with thousands separators, and one decimal below 100.
func Num(v float64) string {
	if math.Abs(v) < 100 && v != math.Trunc(v) {
		return fmt.Sprintf("%.1f", v)
	}
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func bytesIEC(n int64) string {
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

func yesNo(met bool) string {
	// Bold in Markdown; still loud in a terminal.
	if met {
		return "yes"
	}
	return "**no**"
}
