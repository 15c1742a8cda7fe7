package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/coordinator/coordinator/coordinator"
)

// forgetFlags configure forgetting: services and versions unused for
// --forget-after are removed from memory and etcd; finished updates are
// kept, per service, the --update-retention newest, none older than
// --update-max-age.
type forgetFlags struct {
	after, maxAge time.Duration
	retention     int
}

func registerForgetFlags(fs *pflag.FlagSet) *forgetFlags {
	f := &forgetFlags{}
	fs.DurationVar(&f.after, "forget-after", coordinator.DefaultForgetAfter,
		"remove a service or version that has had no session and no live transaction this long (from memory and etcd); 0 or negative: never")
	fs.IntVar(&f.retention, "update-retention", coordinator.DefaultUpdateRetention,
		"finished updates kept per service (the newest); older ones are deleted")
	fs.DurationVar(&f.maxAge, "update-max-age", coordinator.DefaultUpdateMaxAge,
		"finished updates older than this are deleted")
	return f
}

func (f *forgetFlags) validate() error {
	switch {
	case f.retention < 1:
		return fmt.Errorf("--update-retention must be at least 1, got %d", f.retention)
	case f.maxAge <= 0:
		return fmt.Errorf("--update-max-age must be positive, got %s", f.maxAge)
	}
	return nil
}

func (f *forgetFlags) apply(c *coordinator.Config) {
	c.ForgetAfter = f.after
	if f.after <= 0 {
		c.ForgetAfter = -1 // never; zero would mean the default
	}
	c.UpdateRetention = f.retention
	c.UpdateMaxAge = f.maxAge
}
