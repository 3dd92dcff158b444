//go:build !linux

package stats

import (
	"context"
	"time"
)

func lockThread() (unlock func()) { return func() {} }

// sleepUntil waits on a Go timer until due, or returns ctx's error once
// ctx ends. Elsewhere than on Linux, operations may start up to a
// millisecond late.
func sleepUntil(ctx context.Context, due time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	wait := time.Until(due)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
