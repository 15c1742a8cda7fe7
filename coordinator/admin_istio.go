package coordinator

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"google.golang.org/genproto/googleapis/api/httpbody"

	"github.com/coordinator/coordinator/coordinator/graph"
	"github.com/coordinator/coordinator/mesh/istio"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// Names Kubernetes accepts: a namespace is a DNS-1123 label, a host a
// DNS-1123 subdomain (auth, auth.shop.svc.cluster.local).
var (
	k8sLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	k8sSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// GetServiceIstio renders the Istio manifests that enforce the service's
// routing now (package mesh/istio): its versions, its default version and
// its unfinished update, copied under the event lock, as the services view
// copies them.
func (a admin) GetServiceIstio(ctx context.Context, req *pb.GetServiceIstioRequest) (*httpbody.HttpBody, error) {
	if err := storage.ValidName("service", req.GetService()); err != nil {
		return nil, err
	}
	if ns := req.GetNamespace(); ns != "" && !k8sLabel.MatchString(ns) {
		return nil, fmt.Errorf("%w: namespace %q is not a DNS-1123 label", ErrInvalidArgument, ns)
	}
	if h := req.GetHost(); h != "" && (len(h) > 253 || !k8sSubdomain.MatchString(h)) {
		return nil, fmt.Errorf("%w: host %q is not a DNS-1123 subdomain", ErrInvalidArgument, h)
	}
	switch req.GetFormat() {
	case "", "yaml", "json":
	default:
		return nil, fmt.Errorf("%w: format %q: want yaml or json", ErrInvalidArgument, req.GetFormat())
	}
	in := istio.Input{Service: req.GetService(), Namespace: req.GetNamespace(), Host: req.GetHost()}
	c := a.c
	c.mu.Lock()
	s, ok := c.eng.LookupService(req.GetService())
	if !ok {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w %q", ErrUnknownService, req.GetService())
	}
	st := c.serviceStatesLocked([]graph.ServiceID{s}, serviceDetail{})[0]
	if u := c.orch.upd.active(s); u != nil && !u.finished() {
		m := u.member(s)
		in.Update = &istio.Update{Strategy: u.rec.Strategy, Phase: u.rec.Phase, From: m.fromName,
			To: m.toName, Switched: u.switched, RollingBack: u.rollback}
	}
	c.mu.Unlock()
	in.Default = st.DefaultVersion
	for _, v := range st.Versions {
		in.Versions = append(in.Versions, v.Version)
	}
	m, err := istio.Render(in)
	if errors.Is(err, istio.ErrInvalid) {
		return nil, fmt.Errorf("%w: %v", ErrCannotRender, err)
	}
	if err != nil {
		return nil, err
	}
	if req.GetFormat() == "json" {
		b, err := m.JSON()
		return &httpbody.HttpBody{ContentType: "application/json", Data: b}, err
	}
	b, err := m.YAML()
	return &httpbody.HttpBody{ContentType: "application/yaml", Data: b}, err
}
