package flows

import (
	"context"
	"testing"
)

// srPlugin records its phases and, in header_filter, tags the response or
// answers.
type srPlugin struct {
	seen   []Phase
	answer bool
	local  []bool
}

func (p *srPlugin) Name() string  { return "sr" }
func (p *srPlugin) Priority() int { return 1 }
func (p *srPlugin) Access(ctx context.Context, x *Exchange) error {
	p.seen = append(p.seen, PhaseAccess)
	return nil
}
func (p *srPlugin) HeaderFilter(ctx context.Context, x *Exchange) error {
	p.seen = append(p.seen, PhaseHeaderFilter)
	p.local = append(p.local, IsLocalReply(ctx))
	if p.answer && !IsLocalReply(ctx) {
		x.Respond(418, nil, []byte("tea"))
		return nil
	}
	x.SetResponseHeader("x-tag", "1")
	return nil
}
func (p *srPlugin) BodyFilter(ctx context.Context, x *Exchange) error {
	p.seen = append(p.seen, PhaseBodyFilter)
	return nil
}

func TestSubflowResponse(t *testing.T) {
	pl := &srPlugin{}
	svc := &Service{Name: "f", Pipeline: NewPipeline([]*Instance{{Plugin: pl, Name: "sr"}})}
	sub := NewExchange("id", Request{Method: "GET", Path: "/p"}, nil)
	sub.Response = Response{Status: 201, Headers: Headers{"a": {"b"}}, Body: []byte("up")}
	var upSaw Response
	resp, err := svc.SubflowResponse(context.Background(), sub, func(_ context.Context, s *Exchange) (Response, error) {
		upSaw = s.Response
		return Response{Status: 200, Body: []byte("flow")}, nil
	})
	if err != nil || resp.Status != 200 || string(resp.Body) != "flow" {
		t.Fatalf("resp %+v err %v", resp, err)
	}
	if upSaw.Status != 201 || upSaw.Headers.Get("x-tag") != "1" || string(upSaw.Body) != "up" {
		t.Errorf("up saw %+v, want the response after the flow's response phases", upSaw)
	}
	if len(pl.seen) != 2 || pl.seen[0] != PhaseHeaderFilter || pl.seen[1] != PhaseBodyFilter || pl.local[0] {
		t.Errorf("phases %v local %v, want header_filter, body_filter on a non-local response", pl.seen, pl.local)
	}

	// A plugin that answers: its reply (through the response phases) is the
	// result; up is not called.
	pl2 := &srPlugin{answer: true}
	svc2 := &Service{Name: "g", Pipeline: NewPipeline([]*Instance{{Plugin: pl2, Name: "sr"}})}
	sub2 := NewExchange("id", Request{}, nil)
	sub2.Response = Response{Status: 200}
	resp, err = svc2.SubflowResponse(context.Background(), sub2, func(context.Context, *Exchange) (Response, error) {
		t.Fatal("up called after a plugin answered")
		return Response{}, nil
	})
	if err != nil || resp.Status != 418 || string(resp.Body) != "tea" || resp.Headers.Get("x-tag") != "1" {
		t.Fatalf("resp %+v err %v", resp, err)
	}
	if len(pl2.local) != 2 || pl2.local[0] || !pl2.local[1] {
		t.Errorf("IsLocalReply per header_filter run %v, want [false true]", pl2.local)
	}
}
