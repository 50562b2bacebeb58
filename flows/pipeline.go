package flows

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sidecall/sidecall/internal/tracing"
)

// Instance is a plugin placed in a pipeline, with where it came from.
type Instance struct {
	Plugin Plugin
	Name   string // plugin name
	Scope  Scope
	access AccessPlugin
	header HeaderFilterPlugin
	body   BodyFilterPlugin
	// protocols are the plugin's Kong protocols (protocols.go); 0 = all.
	protocols protoSet
}

// Pipeline is a route's plugins in run order, compiled once at load.
type Pipeline struct {
	Instances []*Instance
	needs     Needs
	hasAccess bool
	budget    [2]time.Duration // access, response phases (budget.go)
}

// Observer is told about every plugin call (metrics, logs).
type Observer func(in *Instance, phase Phase, d time.Duration, err error)

// NewPipeline builds a pipeline from instances already in run order.
func NewPipeline(ins []*Instance) *Pipeline {
	p := &Pipeline{Instances: ins}
	for _, in := range ins {
		in.access, _ = in.Plugin.(AccessPlugin)
		in.header, _ = in.Plugin.(HeaderFilterPlugin)
		in.body, _ = in.Plugin.(BodyFilterPlugin)
		// A plugin that reports its needs is believed (correlation-id has a
		// header_filter but needs it only with echo_downstream).
		if nr, ok := in.Plugin.(NeedsReporter); ok {
			p.needs = p.needs.Or(nr.Needs())
		} else {
			if in.header != nil {
				p.needs.ResponseHeaders = true
			}
			if in.body != nil {
				p.needs.ResponseHeaders, p.needs.ResponseBody = true, true
			}
		}
		if in.access != nil {
			p.hasAccess = true
		}
		p.addBudget(in)
	}
	return p
}

// Needs tells what the processor must ask Envoy for on this pipeline.
func (p *Pipeline) Needs() Needs {
	if p == nil {
		return Needs{}
	}
	return p.needs
}

// HasAccess tells whether a plugin of the pipeline runs in the access phase.
func (p *Pipeline) HasAccess() bool { return p != nil && p.hasAccess }

// Empty tells whether the pipeline has nothing to run.
func (p *Pipeline) Empty() bool { return p == nil || len(p.Instances) == 0 }

// Run runs the phase's plugins in order. In the access phase it stops at
// the first error or when a plugin set x.Reply; response phases run every
// plugin (Kong runs header_filter on local replies too) unless one errs.
func (p *Pipeline) Run(ctx context.Context, phase Phase, x *Exchange, obs Observer) error {
	if p == nil {
		return nil
	}
	x.Phase = phase
	traced := tracing.Recording(ctx)
	for _, in := range p.Instances {
		if in.protocols != 0 && !in.runsFor(x) {
			continue
		}
		var f func(context.Context, *Exchange) error
		switch phase {
		case PhaseAccess:
			if in.access != nil {
				f = in.access.Access
			}
		case PhaseHeaderFilter:
			if in.header != nil {
				f = in.header.HeaderFilter
			}
		case PhaseBodyFilter:
			if in.body != nil {
				f = in.body.BodyFilter
			}
		}
		if f == nil {
			continue
		}
		var err error
		if traced {
			err = tracedRun(ctx, x, f, in, phase, obs)
		} else if obs != nil {
			err = observed(ctx, x, f, in, phase, obs)
		} else {
			err = f(ctx, x)
		}
		if err != nil {
			return err
		}
		if phase == PhaseAccess && x.Reply != nil {
			return nil
		}
	}
	return nil
}

// errPanicked is what the observer sees for a plugin run that panicked.
var errPanicked = errors.New("plugin panicked")

// observed runs f and tells obs, a panicking run included (as an error; the
// panic goes on to the processor's recover).
func observed(ctx context.Context, x *Exchange, f func(context.Context, *Exchange) error, in *Instance, phase Phase, obs Observer) (err error) {
	start := time.Now()
	returned := false
	defer func() {
		if !returned {
			obs(in, phase, time.Since(start), errPanicked)
		}
	}()
	err = f(ctx, x)
	returned = true
	obs(in, phase, time.Since(start), err)
	return err
}

// tracedRun runs f (observed, if obs is set) in its own span, the parent
// of the spans the plugin starts (callouts, Kafka, shared flows).
func tracedRun(ctx context.Context, x *Exchange, f func(context.Context, *Exchange) error, in *Instance, phase Phase, obs Observer) (err error) {
	route := ""
	if x.Route != nil {
		route = x.Route.Name
	}
	ctx, span := tracing.Start(ctx, "plugin "+in.Name, trace.SpanKindInternal, tracing.Plugin.String(in.Name),
		tracing.Phase.String(phase.String()), tracing.Route.String(route), tracing.PluginID.String(in.Scope.PluginID))
	returned := false
	defer func() {
		if !returned {
			err = errPanicked
		}
		if phase == PhaseAccess && x.Reply != nil {
			span.SetAttributes(tracing.HTTPStatus.Int(x.Reply.Status))
		}
		tracing.EndError(span, err)
	}()
	if obs != nil {
		err = observed(ctx, x, f, in, phase, obs)
	} else {
		err = f(ctx, x)
	}
	returned = true
	return err
}
