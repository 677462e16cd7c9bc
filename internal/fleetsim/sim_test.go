package fleetsim

import (
	"context"
	"testing"
	"time"
)

func smallScenario() Scenario {
	sc := DefaultScenario()
	sc.IPs, sc.Hosts, sc.Flows = 500, 10, 20_000
	sc.Duration = 5 * time.Minute
	sc.MeanLifetime = 2 * time.Minute
	sc.MaxFlowDuration = 3 * time.Minute
	return sc
}

func TestRunSmoke(t *testing.T) {
	res, err := Run(context.Background(), smallScenario(), NewStoreAttribution)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
}
