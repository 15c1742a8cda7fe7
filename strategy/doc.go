// Package strategy decides where a call to a service that is being updated
// goes: the old version, the new one, or nowhere yet (held), for the WF, BF
// and CV strategies of DESIGN.md section 4 and the NAIVE baseline. It is
// pure: the coordinator supplies what the transaction used and whether the
// update has switched, and drives the phases.
package strategy
