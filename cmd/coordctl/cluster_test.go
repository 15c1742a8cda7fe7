package main

import (
	"bytes"
	"testing"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func testCluster() *coordinatorv1.Cluster {
	r1 := &coordinatorv1.Replica{Name: "r1", GrpcAddress: "10.0.0.1:7400", HttpAddress: "10.0.0.1:7401", Leader: true}
	return &coordinatorv1.Cluster{
		Leader: r1,
		Replicas: []*coordinatorv1.Replica{
			r1,
			{Name: "r2", GrpcAddress: "10.0.0.2:7400", HttpAddress: "10.0.0.2:7401"},
		},
		Members: []*coordinatorv1.EtcdMember{
			{Id: 0x8e9e05c52164694d, Name: "n1", ClientUrls: []string{"http://10.0.0.1:2379"}, Healthy: true,
				RaftLeader: true, DbSizeBytes: 20480, RaftIndex: 1234},
			{Id: 0x91bc3c398fb3c146, Name: "n2", ClientUrls: []string{"http://10.0.0.2:2379", "http://n2:2379"}, Healthy: true,
				DbSizeBytes: 1536 * 1024, RaftIndex: 1234},
			{Id: 0xfd422379fda50e48, Name: "n3", ClientUrls: []string{"http://10.0.0.3:2379"},
				Error: "http://10.0.0.3:2379: context deadline exceeded"},
			{Id: 0x2a, Learner: true, Error: "not started: no client URL published"},
		},
		AnsweredBy: "r2",
	}
}

func TestRenderCluster(t *testing.T) {
	var buf bytes.Buffer
	if err := renderCluster(&buf, testCluster()); err != nil {
		t.Fatal(err)
	}
	want := `Leader:       r1 (gRPC 10.0.0.1:7400, HTTP 10.0.0.1:7401)
Answered by:  r2

REPLICA  GRPC           HTTP           LEADER
r1       10.0.0.1:7400  10.0.0.1:7401  yes
r2       10.0.0.2:7400  10.0.0.2:7401  no

MEMBER     ID                CLIENT URLS                          HEALTHY  RAFT LEADER  DB SIZE  RAFT INDEX  ERROR
n1         8e9e05c52164694d  http://10.0.0.1:2379                 yes      yes          20 KiB   1234        -
n2         91bc3c398fb3c146  http://10.0.0.2:2379,http://n2:2379  yes      no           1.5 MiB  1234        -
n3         fd422379fda50e48  http://10.0.0.3:2379                 no       no           -        -           http://10.0.0.3:2379: context deadline exceeded
(learner)  2a                -                                    no       no           -        -           not started: no client URL published
`
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestRenderClusterNoLeader(t *testing.T) {
	var buf bytes.Buffer
	if err := renderCluster(&buf, &coordinatorv1.Cluster{AnsweredBy: "r1"}); err != nil {
		t.Fatal(err)
	}
	want := "Leader:       none (no replica campaigns)\nAnswered by:  r1\n\nNo etcd members.\n"
	if got := buf.String(); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestClusterJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := writeJSON(&buf, testCluster()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"answeredBy": "r2"`, `"raftLeader": true`, `"dbSizeBytes": "20480"`, `"id": "10276657743932975437"`} {
		if !bytes.Contains(buf.Bytes(), []byte(want)) {
			t.Errorf("JSON lacks %s:\n%s", want, buf.String())
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "", -1: "", 512: "512 B", 1024: "1 KiB", 1536: "1.5 KiB", 2 << 30: "2 GiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
