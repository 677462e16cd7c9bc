package fleetsim

import (
	"fmt"
	"io"
	"time"
)

// Scale sizes a sweep's scenarios.
type Scale struct {
	Name     string
	IPs      int
	Hosts    int
	Flows    int
	Duration time.Duration
}

// Scales offered by the evaluation.
var (
	// ScaleSmall runs a whole sweep in a couple of minutes.
	ScaleSmall = Scale{Name: "small", IPs: 5_000, Hosts: 100, Flows: 200_000, Duration: 10 * time.Minute}
	// ScaleLarge is 10 million flows over 100k addresses.
	ScaleLarge = Scale{Name: "large", IPs: 100_000, Hosts: 2_000, Flows: 10_000_000, Duration: 20 * time.Minute}
)

// Sweep returns the scenarios of the evaluation at scale: a base fleet, then
// one fault varied at a time (claim delay up to beyond max_wait, loss,
// reordering, duplication, churn, host clock skew inside and outside the
// clock_skew guard), then everything at once.
func Sweep(scale Scale, seed uint64) []Scenario {
	base := DefaultScenario()
	base.Seed = seed
	base.IPs, base.Hosts, base.Flows, base.Duration = scale.IPs, scale.Hosts, scale.Flows, scale.Duration
	base.Name = "base"
	maxWait := base.Processor.MaxWait

	var out []Scenario
	add := func(name string, edit func(*Scenario)) {
		sc := base
		sc.Name = name
		edit(&sc)
		out = append(out, sc)
	}
	add("base", func(*Scenario) {})
	for _, d := range []time.Duration{0, 5 * time.Second, 15 * time.Second, maxWait - 5*time.Second, maxWait + 5*time.Second, 3 * maxWait} {
		add("delay", func(sc *Scenario) { sc.Claims.Delay = d })
	}
	for _, l := range []float64{0.05, 0.15, 0.30} {
		add("loss", func(sc *Scenario) { sc.Claims.Loss = l })
	}
	add("reorder", func(sc *Scenario) {
		sc.Claims.Reorder, sc.Claims.ReorderSpan = 0.3, 20*time.Second
	})
	add("duplicate", func(sc *Scenario) { sc.Claims.Duplicate = 0.2 })
	for _, l := range []time.Duration{time.Hour, 2 * time.Minute, 30 * time.Second} {
		add("churn", func(sc *Scenario) { sc.MeanLifetime = l })
	}
	for _, s := range []time.Duration{base.Processor.ClockSkew / 4, base.Processor.ClockSkew / 2, base.Processor.ClockSkew, 3 * base.Processor.ClockSkew} {
		add("skew", func(sc *Scenario) { sc.MaxHostSkew = s })
	}
	add("combined", func(sc *Scenario) {
		sc.Claims = Delivery{Delay: 10 * time.Second, Jitter: 5 * time.Second, Loss: 0.1, Reorder: 0.2, ReorderSpan: 10 * time.Second, Duplicate: 0.05}
		sc.MeanLifetime = 2 * time.Minute
		sc.MaxHostSkew = base.Processor.ClockSkew / 2
	})
	add("combined", func(sc *Scenario) {
		sc.Claims = Delivery{Delay: 10 * time.Second, Jitter: 5 * time.Second, Loss: 0.1, Reorder: 0.2, ReorderSpan: 10 * time.Second, Duplicate: 0.05}
		sc.MeanLifetime = 2 * time.Minute
		sc.MaxHostSkew = 2 * base.Processor.ClockSkew
	})
	return out
}

// WriteMarkdownTable writes results as one markdown table row per run.
// Percentages are of the flow records scored.
func WriteMarkdownTable(w io.Writer, results []Result) error {
	const header = "| scenario | claim delay | loss | reorder | dup | lifetime | host skew | flows | correct | misattr | unattr | floor (no claim) | near edge | claim unused | conflict/uncertain | held | hold p50/p99 | lost | baseline misattr | baseline unattr |\n" +
		"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
	if _, err := io.WriteString(w, header); err != nil {
		return err
	}
	for _, r := range results {
		sc := r.Scenario
		own, bl := r.Ownership, r.Baseline
		guard := "in guard"
		if !sc.SkewWithinGuard() {
			guard = "**outside guard**"
		}
		skew := "0"
		if sc.MaxHostSkew > 0 {
			skew = fmt.Sprintf("±%s (%s)", sc.MaxHostSkew, guard)
		}
		reorder := "0"
		if sc.Claims.Reorder > 0 {
			reorder = fmt.Sprintf("%.0f%% +≤%s", 100*sc.Claims.Reorder, sc.Claims.ReorderSpan)
		}
		_, err := fmt.Fprintf(w, "| %s | %s +≤%s | %.0f%% | %s | %.0f%% | %s | %s | %d | %.2f%% | %d (%.3f%%) | %.2f%% | %.2f%% | %.2f%% | %.2f%% | %.2f%% | %.2f%% | %s/%s | %d | %d (%.2f%%) | %.2f%% |\n",
			sc.Name, sc.Claims.Delay, sc.Claims.Jitter, 100*sc.Claims.Loss, reorder, 100*sc.Claims.Duplicate,
			sc.MeanLifetime, skew, r.Flows,
			own.Share(own.Correct), own.Misattributed, own.Share(own.Misattributed), own.Share(own.AllUnattributed()),
			own.Share(own.NoClaim), own.Share(own.NearEdge), own.Share(own.ClaimUnused), own.Share(own.ConflictOrUncertain),
			100*float64(r.Held)/float64(max(r.Flows, 1)), r.HoldP50, r.HoldP99, r.Lost,
			bl.Misattributed, bl.Share(bl.Misattributed), bl.Share(bl.AllUnattributed()))
		if err != nil {
			return err
		}
	}
	return nil
}
