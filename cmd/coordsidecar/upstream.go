package main

import (
	"net"
	"net/http"
	"time"
)

// Limits on what a peer can make the proxy keep or wait for.
const (
	maxHeaderBytes       = 64 << 10 // request and response headers
	readHeaderTimeout    = 10 * time.Second
	idleTimeout          = 2 * time.Minute
	dialTimeout          = 5 * time.Second
	maxIdleConnsPerHost  = 64
	maxIdleConns         = 512
	maxConcurrentStreams = 1000 // HTTP/2 streams per connection, each way
)

// upstream sends a request over the protocol its client spoke: HTTP/2
// (h2c, prior knowledge, as gRPC speaks it) for an HTTP/2 request, else
// HTTP/1.1. So a gRPC call stays HTTP/2 end to end and an HTTP/1.1-only
// application is never spoken to in HTTP/2.
type upstream struct{ h1, h2c *http.Transport }

func newUpstream() *upstream {
	base := func(p func(*http.Protocols)) *http.Transport {
		var protos http.Protocols
		p(&protos)
		return &http.Transport{
			Proxy:                  nil, // never HTTP_PROXY: the application's may point at this very proxy
			DialContext:            (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			Protocols:              &protos,
			MaxIdleConns:           maxIdleConns,
			MaxIdleConnsPerHost:    maxIdleConnsPerHost,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: maxHeaderBytes,
			DisableCompression:     true, // bodies pass as they are
			HTTP2: &http.HTTP2Config{
				MaxConcurrentStreams: maxConcurrentStreams,
				PingTimeout:          15 * time.Second,
				SendPingTimeout:      30 * time.Second,
			},
		}
	}
	return &upstream{
		h1:  base(func(p *http.Protocols) { p.SetHTTP1(true) }),
		h2c: base(func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }),
	}
}

func (u *upstream) RoundTrip(r *http.Request) (*http.Response, error) {
	if tr, ok := r.Context().Value(trailerKey{}).(http.Header); ok {
		// Request clones (ReverseProxy's, the SDK Transport's) copy the
		// trailer before the body is read: send the inbound request's own,
		// whose values are set when its body ends, which is before the
		// transport writes the trailer.
		r2 := *r
		r2.Trailer = tr
		r = &r2
	}
	if r.ProtoMajor == 2 {
		return u.h2c.RoundTrip(r)
	}
	return u.h1.RoundTrip(r)
}

func (u *upstream) close() {
	u.h1.CloseIdleConnections()
	u.h2c.CloseIdleConnections()
}

// newServer is an HTTP server of the data plane: HTTP/1.1 and h2c on one
// port, with bounded headers, idle connections and header reads (no read
// or write timeout: streams may last).
func newServer(h http.Handler, errLog func(string)) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         &protos,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: maxConcurrentStreams,
			PingTimeout:          15 * time.Second,
			SendPingTimeout:      30 * time.Second,
		},
		ErrorLog: newLogLogger(errLog),
	}
}
