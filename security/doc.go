// Package security is the root of the coordinator's transport security:
// certificates read from files and reloaded as they rotate (tlsfiles),
// workload identities and the policy of what they may register as
// (identity), admin roles and tokens (adminauth), and a throwaway
// certificate authority for tests (testca). See docs/SECURITY.md.
package security
