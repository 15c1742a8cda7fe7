package adminauth

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/security/identity"
)

// SessionPath is the route of browser sessions: POST (with a bearer
// token) sets the session cookie, GET says who the caller is, DELETE logs
// out. It is served outside the REST gateway (SessionHandler).
const SessionPath = "/v1/session"

// authenticateHTTP authenticates a REST or web view request: client
// certificate (with a role), else bearer token, else session cookie.
func (a *Authenticator) authenticateHTTP(r *http.Request) (Principal, string, error) {
	if a.open {
		return openPrincipal, "", nil
	}
	var certP *Principal
	if a.cfg.ClientCerts && r.TLS != nil {
		if id, err := a.ids.FromConnection(r.TLS); err == nil {
			p := Principal{Name: id.Name, Role: a.identityRole(id.Name), Via: ViaMTLS}
			if p.Role > NoRole {
				return p, "", nil
			}
			certP = &p
		} else if !errors.Is(err, identity.ErrNoCertificate) {
			return Principal{}, "", status.Errorf(codes.Unauthenticated, "client certificate not accepted (%v), and no bearer token", err)
		}
	}
	if v := r.Header.Get("Authorization"); v != "" {
		tok, ok := bearer(v)
		if !ok {
			return Principal{}, "", status.Error(codes.Unauthenticated, `the Authorization header is not "Bearer <token>"`)
		}
		p, err := a.byToken(tok)
		return p, tok, err
	}
	if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" {
		return a.bySession(c.Value)
	}
	if certP != nil {
		return *certP, "", nil
	}
	return Principal{}, "", status.Error(codes.Unauthenticated,
		"no client certificate, bearer token or session cookie; send Authorization: Bearer <token>, or POST it to "+SessionPath+" for a cookie")
}

// bySession authenticates a session cookie: live, and its token still in
// the token file (whose current role it takes).
func (a *Authenticator) bySession(value string) (Principal, string, error) {
	se, ok := a.sessions.get(value)
	if !ok {
		return Principal{}, "", status.Error(codes.Unauthenticated, "session expired or unknown; log in again with a token")
	}
	if a.tokens != nil {
		for _, t := range a.tokens.get() {
			if subtle.ConstantTimeCompare(t.hash[:], se.hash[:]) == 1 {
				return Principal{Name: t.name, Role: t.role, Via: ViaCookie}, se.token, nil
			}
		}
	}
	a.sessions.remove(value)
	return Principal{}, "", status.Errorf(codes.Unauthenticated, "session revoked: token %q is no longer in the token file", se.name)
}

// writeError answers err (a gRPC status) as the REST gateway answers
// errors: the HTTP status of its code, and {"code", "message", "details"}.
func writeError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	if st.Code() == codes.Unauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="coordinator"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	_ = json.NewEncoder(w).Encode(map[string]any{"code": int(st.Code()), "message": st.Message(), "details": []any{}})
}

// Middleware authenticates every request to next (the REST gateway,
// /openapi.json): 401 without credentials, 403 for a caller with no admin
// role; what role each method needs is the gRPC interceptors' to check.
// The principal goes into the request's context, where GatewayMetadata
// reads it. Requests' own Grpc-Metadata-Coordinator-Principal headers are
// dropped.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), strings.ToLower(runtime.MetadataHeaderPrefix+PrincipalMetadataKey)) {
				r.Header.Del(k)
			}
		}
		p, tok, err := a.authenticateHTTP(r)
		if err == nil && p.Role == NoRole {
			err = status.Errorf(codes.PermissionDenied, "%s (via %s) has no admin role", p.Name, p.Via)
		}
		if err != nil {
			reason := reasonUnauthenticated
			if status.Code(err) == codes.PermissionDenied {
				reason = reasonForbidden
			}
			a.refusals.WithLabelValues(reason).Inc()
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				a.audit(slog.LevelInfo, p, r.Method+" "+r.URL.Path, err)
			}
			writeError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(withCredential(NewContext(r.Context(), p), tok)))
	})
}

// GatewayMetadata is the REST gateway's option that passes the principal
// the Middleware authenticated (and its token, for forwarding) to the
// gateway's internal gRPC server as metadata. The internal server's
// interceptors (Mode Internal) trust it; the public ones would refuse it.
func GatewayMetadata() runtime.ServeMuxOption {
	return runtime.WithMetadata(func(ctx context.Context, r *http.Request) metadata.MD {
		p, ok := FromContext(r.Context())
		if !ok || p.Via == ViaOpen {
			return nil
		}
		md := metadata.Pairs(PrincipalMetadataKey, encodePrincipal(p))
		if tok := credentialFrom(r.Context()); tok != "" {
			md.Set("authorization", "Bearer "+tok)
		}
		return md
	})
}

// whoami is the answer of GET and POST /v1/session.
type whoami struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	Via       string `json:"via"`
	ExpiresAt string `json:"expiresAt,omitempty"`
}

// SessionHandler serves SessionPath: POST with "Authorization: Bearer
// <token>" sets an HttpOnly, SameSite=Strict session cookie (Secure over
// TLS) and says who it is for; GET says who the caller is (any way it
// authenticates); DELETE ends the cookie's session.
func (a *Authenticator) SessionHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			p, _, err := a.authenticateHTTP(r)
			if err != nil {
				writeError(w, err)
				return
			}
			writeJSON(w, whoami{Name: p.Name, Role: p.Role.String(), Via: p.Via})
		case http.MethodPost:
			a.login(w, r)
		case http.MethodDelete:
			if c, err := r.Cookie(SessionCookie); err == nil {
				a.sessions.remove(c.Value)
			}
			http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
				HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Allow", "GET, HEAD, POST, DELETE")
			writeError(w, status.Error(codes.Unimplemented, r.Method+" "+SessionPath+": want GET, POST or DELETE"))
		}
	})
}

func (a *Authenticator) login(w http.ResponseWriter, r *http.Request) {
	if a.open {
		writeJSON(w, whoami{Name: openPrincipal.Name, Role: Operator.String(), Via: ViaOpen})
		return
	}
	tok, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		a.refusals.WithLabelValues(reasonUnauthenticated).Inc()
		writeError(w, status.Error(codes.Unauthenticated, "POST "+SessionPath+` needs "Authorization: Bearer <token>"`))
		return
	}
	if a.tokens == nil {
		writeError(w, status.Error(codes.Unauthenticated, "no token file is configured: sessions are bought with tokens"))
		return
	}
	t, ok := a.tokens.get().match(tok)
	if !ok {
		a.refusals.WithLabelValues(reasonUnauthenticated).Inc()
		a.audit(slog.LevelInfo, Principal{}, "POST "+SessionPath, status.Error(codes.Unauthenticated, "bearer token not recognised"))
		writeError(w, status.Error(codes.Unauthenticated, "bearer token not recognised: not in the token file (or removed from it)"))
		return
	}
	value, expires, err := a.sessions.create(t, tok)
	if err != nil {
		writeError(w, status.Errorf(codes.Internal, "session: %v", err))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: value, Path: "/", MaxAge: int(a.sessions.ttl / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	p := Principal{Name: t.name, Role: t.role, Via: ViaCookie}
	a.audit(slog.LevelInfo, p, "POST "+SessionPath, nil)
	writeJSON(w, whoami{Name: p.Name, Role: p.Role.String(), Via: ViaCookie, ExpiresAt: expires.UTC().Format(time.RFC3339)})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
