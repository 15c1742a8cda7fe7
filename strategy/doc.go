// Package strategy owns the update strategies of DESIGN.md section 4, each
// whole and in one place: WF (wait for freeness), BF (block for freeness),
// CV (concurrent versions) and the NAIVE baseline. A Strategy says where a
// call to a service being updated goes (the old versions, the new ones, the
// ones the transaction already used, or nowhere yet: held) and runs the
// update's phase machine: when to enter WAITING, when to switch, when the
// update is DONE, what an abort undoes, and (Resume) where a new leader
// takes a stored update back.
//
// It is pure: the coordinator's orchestrator supplies the update's state and
// what it observes (acknowledgements, freeness, drained versions, switch
// holds) through the Observation interface, persists each phase the machine
// returns before acting on it, and has no strategy check of its own. The
// interface speaks of "the set" (the services updated together), so that
// updates of several services at once (DESIGN §4.8) need no new shape.
// Adding a strategy is a type here and one line in the registry.
//
// A canary (DESIGN §4 item 7, canary.go) is CV with weights: State.Canary
// carries its steps, CV's Decide assigns a transaction new to the set by
// the current weight with an exact counter (AssignNew), and its phase
// machine moves from CANARY step to step (Promote) to the switch. Its
// analysis (analysis.go) sums call outcomes per version in a bounded
// Window and Judge says when the new version is worse.
package strategy
