// Package adminauth owns who may call the coordinator's admin API: the two
// admin roles (viewer < operator) and which AdminService method needs
// which; authenticating a caller by verified client certificate (mTLS
// identity mapped to a role by a file), bearer token (a file of hashed
// tokens with roles), browser session cookie, or a principal forwarded by
// another replica; the gRPC interceptors and HTTP middleware that apply
// the same rules to gRPC and REST; browser sessions; and the audit log
// line of every mutating admin call.
//
// With no client CA and no token file configured (the loopback default)
// every caller is an operator (Via "open"), as before this package. Once
// either is configured, an unauthenticated caller gets only what is not
// admin: /health, /metrics and gRPC health.
package adminauth

import (
	"fmt"
	"strings"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Role is what an admin caller may do. Roles are ordered: an operator may
// do everything a viewer may.
type Role int

const (
	// NoRole: authenticated, or not, but allowed nothing.
	NoRole Role = iota
	// Viewer reads: state, watches, dry runs, the cluster view.
	Viewer
	// Operator also changes state: starts and aborts updates (and later
	// promotes or rolls them back), ends self-preservation.
	Operator
)

func (r Role) String() string {
	switch r {
	case Viewer:
		return "viewer"
	case Operator:
		return "operator"
	}
	return "none"
}

// ParseRole reads "viewer" or "operator".
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "viewer":
		return Viewer, nil
	case "operator":
		return Operator, nil
	}
	return NoRole, fmt.Errorf("role %q: want viewer or operator", s)
}

// AdminPrefix starts the full gRPC method name of every admin method;
// only these are subject to admin roles (not the sidecar service, not
// grpc.health.v1, not server reflection).
var AdminPrefix = "/" + pb.AdminService_ServiceDesc.ServiceName + "/"

// MethodRoles is the role each AdminService method needs, by method name.
// A method missing here needs Operator (fail closed); a test checks that
// every method of the service descriptor is listed.
var MethodRoles = map[string]Role{
	"GetFreeness":         Viewer,
	"GetGraph":            Viewer,
	"ListSessions":        Viewer,
	"ListTransactions":    Viewer,
	"GetUpdate":           Viewer,
	"ListUpdates":         Viewer,
	"WatchUpdate":         Viewer,
	"WatchState":          Viewer, // the web view's stream
	"GetCluster":          Viewer,
	"GetSelfPreservation": Viewer,
	"ListServices":        Viewer,
	"GetService":          Viewer,
	"DryRunUpdate":        Viewer, // plans, changes nothing
	"GetServiceIstio":     Viewer, // renders manifests, applies nothing
	"ListLanes":           Viewer,
	"StartUpdate":         Operator,
	"AbortUpdate":         Operator,
	"PromoteUpdate":       Operator,
	"PauseUpdate":         Operator,
	"ResumeUpdate":        Operator,
	"EndSelfPreservation": Operator,
	"CreateLane":          Operator,
	"DeleteLane":          Operator,
	"PromoteLane":         Operator,
}

// IsAdmin reports whether fullMethod ("/pkg.Service/Method") is an admin method.
func IsAdmin(fullMethod string) bool { return strings.HasPrefix(fullMethod, AdminPrefix) }

// reflectionPrefixes start gRPC server reflection's methods. Reflection
// describes the admin API (as /openapi.json does), so once authentication
// is on it needs a viewer too; it is never audited.
var reflectionPrefixes = []string{"/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"}

func isReflection(fullMethod string) bool {
	for _, p := range reflectionPrefixes {
		if strings.HasPrefix(fullMethod, p) {
			return true
		}
	}
	return false
}

// Guarded reports whether the interceptors check a role for fullMethod:
// admin methods and server reflection. The sidecar service and
// grpc.health.v1 are not guarded.
func Guarded(fullMethod string) bool { return IsAdmin(fullMethod) || isReflection(fullMethod) }

// RequiredRole is the role a guarded method needs: its MethodRoles entry,
// Viewer for server reflection, else Operator.
func RequiredRole(fullMethod string) Role {
	if isReflection(fullMethod) {
		return Viewer
	}
	if r, ok := MethodRoles[strings.TrimPrefix(fullMethod, AdminPrefix)]; ok && IsAdmin(fullMethod) {
		return r
	}
	return Operator
}

// Mutating reports whether an admin method changes state (needs Operator):
// such calls are audited.
func Mutating(fullMethod string) bool { return RequiredRole(fullMethod) >= Operator }
