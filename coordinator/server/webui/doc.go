// Package webui owns coordinatord's web view at /ui/: a page, its script
// and its style sheet, embedded with go:embed so the view works with no
// network access beyond the coordinator itself (no CDN, no external
// library).
//
// The page is static. It reads everything it shows from the REST gateway
// (/v1/graph, /v1/services, /v1/services/{service}/freeness, /v1/updates,
// /v1/cluster, /v1/selfpreservation), polling about once a second, and its
// actions (abort an update, end self-preservation) are POSTs to the same
// gateway (/v1/updates/{id}:abort, /v1/selfpreservation:end). Whatever
// governs those REST routes (the roles of the security work, once they
// exist) therefore governs the page too; this package decides nothing
// about who may see or do what.
package webui
