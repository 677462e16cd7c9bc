// Command flowattr-evaluate runs the fleet simulator over a sweep of delivery
// faults, churn and clock skew, and prints, as a markdown table, how the
// ownership processor (on the simulator's manual clock), fed the claims each
// simulated host's local-ownership code makes, and the event-based baseline
// attribute the same flows.
//
//	go run ./cmd/flowattr-evaluate                # the default sweep, a couple of minutes
//	go run ./cmd/flowattr-evaluate -check         # exit 1 when a goal is missed
//	go run ./cmd/flowattr-evaluate -scale large -only base   # 10M flows, 100k IPs
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/flowattr/flowattr/cmd/flowattr-evaluate/internal/fleetsim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "flowattr-evaluate:", err)
		os.Exit(1)
	}
}

func run() error {
	scaleName := flag.String("scale", fleetsim.ScaleSmall.Name, "scenario size: small (whole sweep in minutes) or large (10M flows, 100k IPs per scenario)")
	seed := flag.Uint64("seed", 1, "random seed; the same seed gives the same table")
	check := flag.Bool("check", false, "exit with status 1 when a goal is missed")
	only := flag.String("only", "", "run only the scenarios with this name (base, delay, loss, reorder, duplicate, churn, skew, combined)")
	clockSkew := flag.Duration("clock-skew", -1, "override the processor's clock_skew in every scenario (0 turns the guard off, to measure what it costs); negative keeps the default")
	flag.Parse()
	// The simulation allocates a record's worth of pdata per flow and per
	// claim; trading memory for less collector work shortens runs by
	// about a fifth. GOGC in the environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}

	var scale fleetsim.Scale
	switch *scaleName {
	case fleetsim.ScaleSmall.Name:
		scale = fleetsim.ScaleSmall
	case fleetsim.ScaleLarge.Name:
		scale = fleetsim.ScaleLarge
	default:
		return fmt.Errorf("-scale must be %s or %s, got %q", fleetsim.ScaleSmall.Name, fleetsim.ScaleLarge.Name, *scaleName)
	}
	var scenarios []fleetsim.Scenario
	for _, sc := range fleetsim.Sweep(scale, *seed) {
		if *only == "" || sc.Name == *only {
			if *clockSkew >= 0 {
				sc.Processor.ClockSkew = *clockSkew
			}
			scenarios = append(scenarios, sc)
		}
	}
	if len(scenarios) == 0 {
		return fmt.Errorf("-only %q matches no scenario", *only)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	began := time.Now()
	results := make([]fleetsim.Result, 0, len(scenarios))
	for _, sc := range scenarios {
		res, err := fleetsim.Run(ctx, sc)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%-9s %9d flows  %6.1fs  (claims sent %d, lost %d; %d flow records without a local owner)\n",
			sc.Name, res.Flows, res.Elapsed.Seconds(), res.ClaimsSent, res.ClaimsLost, res.LocalUnowned)
		results = append(results, res)
	}
	fmt.Printf("Claims from internal/localowner on every host; attribution by the ownership processor, clock_skew %s. Scale %s (%d IPs, %d hosts, %d flows over %s per scenario), seed %d, %s/%s, %d CPUs; wall time %s.\n\n",
		scenarios[0].Processor.ClockSkew, scale.Name, scale.IPs, scale.Hosts, scale.Flows, scale.Duration, *seed, runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), time.Since(began).Round(time.Second))
	if err := fleetsim.WriteMarkdownTable(os.Stdout, results); err != nil {
		return err
	}
	missed := checkGoals(os.Stdout, results)
	if *check && missed > 0 {
		return fmt.Errorf("%d goals missed", missed)
	}
	return nil
}

// checkGoals writes, as a markdown list, whether the ownership processor met
// the goals it is held to, and returns how many it missed.
func checkGoals(w io.Writer, results []fleetsim.Result) int {
	var missed []string
	for _, r := range results {
		sc := r.Scenario
		name := fmt.Sprintf("%s (delay %s, loss %.0f%%, lifetime %s, skew ±%s)", sc.Name, sc.Claims.Delay, 100*sc.Claims.Loss, sc.MeanLifetime, sc.MaxHostSkew)
		if r.Lost > 0 || r.Duplicated > 0 || r.Unknown > 0 || r.Ownership.Invalid > 0 {
			missed = append(missed, fmt.Sprintf("%s: %d lost, %d duplicated, %d unknown, %d invalid records", name, r.Lost, r.Duplicated, r.Unknown, r.Ownership.Invalid))
		}
		if sc.SkewWithinGuard() && r.Ownership.Misattributed > 0 {
			missed = append(missed, fmt.Sprintf("%s: %d misattributed with skew inside the guard", name, r.Ownership.Misattributed))
		}
		if sc.Claims.Delay+sc.Claims.Jitter < sc.Processor.MaxWait && r.Ownership.Share(r.Ownership.ClaimUnused) > 3 {
			missed = append(missed, fmt.Sprintf("%s: %.2f%% unattributed although a claim had arrived in time, besides the edge rule (goal: within 3 points of the floor and the near-edge share)", name, r.Ownership.Share(r.Ownership.ClaimUnused)))
		}
	}
	if len(missed) == 0 {
		fmt.Fprintln(w, "\nGoals met: no record lost; no misattribution where skew is inside the guard; unattributed within 3 points of the floor plus the near-edge share while claim delay < max_wait.")
		return 0
	}
	fmt.Fprintln(w, "\nGoals missed:")
	for _, m := range missed {
		fmt.Fprintln(w, "- "+m)
	}
	return len(missed)
}
