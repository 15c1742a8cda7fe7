package server

import (
	"errors"
	"strings"
	"testing"
	"time"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// grpc.health.v1 says SERVING only on a replica that can serve: every
// state canServe tells apart, including those a running cluster passes
// through too briefly for TestGRPCHealthFollowsWhetherTheReplicaCanServe
// to catch (no leader known, elected but not started, a failed start).
func TestCanServe(t *testing.T) {
	self := &pb.Replica{Name: "n1"}
	other := &pb.Replica{Name: "n2"}
	failed := errors.New("restore: deadline exceeded")
	for _, tc := range []struct {
		name  string
		set   func(s *Server)
		ok    bool
		means string
	}{
		{"leading", func(s *Server) { s.cur, s.leader = &term{}, self }, true, "leading"},
		{"following", func(s *Server) { s.leader = other }, true, "following n2"},
		{"no leader", func(s *Server) {}, false, "no leader elected"},
		{"elected, not started", func(s *Server) { s.leader = self }, false, "elected, coordinator not started yet"},
		{"failed start", func(s *Server) {
			s.leader, s.startErr, s.startErrAt = other, failed, time.Now()
		}, false, "elected, but the coordinator could not start: " + failed.Error()},
		{"failed start long ago", func(s *Server) {
			s.leader, s.startErr, s.startErrAt = other, failed, time.Now().Add(-2*startErrShown)
		}, true, "following n2"},
		{"etcd not answering, leading", func(s *Server) {
			s.cur, s.leader, s.etcdErr = &term{}, self, errors.New("context deadline exceeded")
		}, false, "etcd: context deadline exceeded"},
		{"stopping", func(s *Server) {
			s.cur, s.leader = &term{}, self
			s.stopping.Store(true)
		}, false, "stopping"},
	} {
		s := &Server{self: self}
		tc.set(s)
		ok, why := s.canServe()
		if ok != tc.ok || !strings.Contains(why, tc.means) {
			t.Errorf("%s: canServe = %v, %q; want %v, %q", tc.name, ok, why, tc.ok, tc.means)
		}
	}
}
