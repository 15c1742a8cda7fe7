package sidecar

import pb "github.com/coordinator/coordinator/proto/coordinator/v1"

// table is an applied routing table, indexed for the call path.
type table struct {
	rev      uint64
	services map[string]*route
}

type route struct {
	defaultVersion string
	updateMode     bool
	byVersion      map[string][]string // version -> addresses
}

func newTable(r *pb.Routing) *table {
	t := &table{rev: r.Revision, services: make(map[string]*route, len(r.Services))}
	for _, s := range r.Services {
		rt := &route{defaultVersion: s.DefaultVersion, updateMode: s.UpdateMode, byVersion: map[string][]string{}}
		for _, e := range s.Endpoints {
			rt.byVersion[e.Version] = append(rt.byVersion[e.Version], e.Address)
		}
		t.services[s.Service] = rt
	}
	return t
}
