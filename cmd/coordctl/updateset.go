package main

import (
	"fmt"
	"strings"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Set updates (DESIGN.md §4.8): `coordctl update portal=v2 proc=v2` moves
// the services named together, as one update with one id.

// setArgs reads the arguments of `update`: one SERVICE (set false), or one
// or more SERVICE=VERSION (set true, members in the order given). Mixing
// the forms, an empty side of "=", or --to with a set is a usage error;
// the coordinator refuses a service named twice and unknown services or
// versions.
func setArgs(args []string, to string) (members []*coordinatorv1.ServiceVersion, set bool, err error) {
	if len(args) == 0 {
		return nil, false, usageErrorf("update: missing argument SERVICE (or SERVICE=VERSION ...)")
	}
	for _, a := range args {
		if strings.Contains(a, "=") {
			set = true
		}
	}
	if !set {
		if len(args) > 1 {
			return nil, false, usageErrorf("update: unexpected argument %q: give one SERVICE [--to VERSION], or SERVICE=VERSION for each service of a set", args[1])
		}
		if strings.TrimSpace(args[0]) == "" {
			return nil, false, usageErrorf("update: SERVICE must not be empty")
		}
		return nil, false, nil
	}
	if to != "" {
		return nil, true, usageErrorf("update: --to is for one SERVICE; a set names each version as SERVICE=VERSION")
	}
	for _, a := range args {
		svc, ver, ok := strings.Cut(a, "=")
		if !ok || strings.TrimSpace(svc) == "" || strings.TrimSpace(ver) == "" {
			return nil, true, usageErrorf("update: %q: want SERVICE=VERSION for every service of a set", a)
		}
		members = append(members, &coordinatorv1.ServiceVersion{Service: svc, Version: ver})
	}
	return members, true, nil
}

// updateServices names what u moves: "auth v1 -> v2", or for a set
// "portal v1 -> v2, proc v1 -> v2".
func updateServices(u *coordinatorv1.Update) string {
	ms := u.GetMembers()
	if len(ms) == 0 {
		return fmt.Sprintf("%s %s -> %s", u.GetService(), u.GetFromVersion(), u.GetToVersion())
	}
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%s %s -> %s", m.GetService(), m.GetFromVersion(), m.GetToVersion())
	}
	return strings.Join(parts, ", ")
}
