package report

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Plot geometry, in SVG user units.
const (
	plotW, plotH         = 900, 540
	marginL, marginR     = 60, 20
	marginT, marginB     = 30, 210
	legendRow            = 16
	plotRight, plotBelow = plotW - marginR, plotH - marginB
)

// palette is colour-blind-safe (Okabe–Ito), in legend order.
var palette = []string{"#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"}

// SVG writes the curves as cumulative distributions on a logarithmic time
// axis: the floor, evict and the baselines span six decades, which a linear
// axis would crush into one corner.
func (r *Report) SVG(w io.Writer) error {
	lo, hi := r.decades()
	x := func(d time.Duration) float64 {
		v := math.Log10(max(float64(d), 1))
		return marginL + (v-lo)/(hi-lo)*(plotRight-marginL)
	}
	y := func(f float64) float64 { return plotBelow - f*(plotBelow-marginT) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		plotW, plotH, plotW, plotH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="13">Latency, cumulative distribution (log time axis, from each operation's due time)</text>`+"\n", marginL)
	for e := int(lo); e <= int(hi); e++ {
		px := x(time.Duration(math.Pow10(e)))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", px, marginT, px, plotBelow)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px, plotBelow+14, Dur(time.Duration(math.Pow10(e))))
	}
	for _, f := range []float64{0, .25, .5, .75, .9, .99, 1} {
		py := y(f)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`+"\n", marginL, py, plotRight, py)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", marginL-4, py+4, f)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n",
		marginL, marginT, plotRight-marginL, plotBelow-marginT)
	for i, c := range r.Curves {
		if len(c.Points) == 0 {
			continue
		}
		col := palette[i%len(palette)]
		var pts []string
		for _, p := range c.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.Value), y(p.Fraction)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", col, strings.Join(pts, " "))
		lx := marginL
		ly := plotBelow + 34 + i*legendRow
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", lx, ly-4, lx+20, ly-4, col)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", lx+26, ly, html.EscapeString(c.Name))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// decades returns the whole powers of ten (of nanoseconds) that enclose
// every point, at least one decade apart.
func (r *Report) decades() (lo, hi float64) {
	var all []float64
	for _, c := range r.Curves {
		for _, p := range c.Points {
			all = append(all, math.Log10(max(float64(p.Value), 1)))
		}
	}
	if len(all) == 0 {
		return 3, 9
	}
	lo, hi = math.Floor(slices.Min(all)), math.Ceil(slices.Max(all))
	if hi <= lo {
		hi = lo + 1
	}
	return lo, hi
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
