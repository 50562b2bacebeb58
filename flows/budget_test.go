package flows

import (
	"context"
	"testing"
	"time"
)

type budgetPlugin struct {
	access, resp time.Duration
}

func (budgetPlugin) Name() string                                { return "b" }
func (budgetPlugin) Priority() int                               { return 0 }
func (budgetPlugin) Access(context.Context, *Exchange) error     { return nil }
func (budgetPlugin) BodyFilter(context.Context, *Exchange) error { return nil }
func (p budgetPlugin) Budget(ph Phase) time.Duration {
	if ph == PhaseAccess {
		return p.access
	}
	return p.resp
}

type accessOnly struct{}

func (accessOnly) Name() string                            { return "a" }
func (accessOnly) Priority() int                           { return 0 }
func (accessOnly) Access(context.Context, *Exchange) error { return nil }

func TestPipelineBudget(t *testing.T) {
	p := NewPipeline([]*Instance{
		{Plugin: budgetPlugin{access: 3 * time.Second}},
		{Plugin: accessOnly{}}, // no Budgeter: counts nothing
		{Plugin: budgetPlugin{access: time.Second, resp: 2 * time.Second}},
		{Plugin: budgetPlugin{access: 500 * time.Hour}},
	})
	if got := p.Budget(PhaseAccess); got != maxBudget {
		t.Errorf("access budget %v, want capped at %v", got, maxBudget)
	}
	p = NewPipeline(p.Instances[:3])
	if got := p.Budget(PhaseAccess); got != 4*time.Second {
		t.Errorf("access budget %v, want 4s", got)
	}
	for _, ph := range []Phase{PhaseHeaderFilter, PhaseBodyFilter} {
		if got := p.Budget(ph); got != 2*time.Second {
			t.Errorf("%v budget %v, want 2s", ph, got)
		}
	}
	var nilP *Pipeline
	if nilP.Budget(PhaseAccess) != 0 {
		t.Error("nil pipeline has a budget")
	}
}
