// Package kubernetes holds the Kubernetes manifests of the coordinator
// (a three-replica StatefulSet, its Services and PodDisruptionBudget) and
// of an example application with coordsidecar; see README.md. It has no
// code: its tests decode every manifest strictly into k8s.io/api types
// and check the wiring, and run the StatefulSet's command line three
// times on loopback to see the members form a cluster.
package kubernetes
