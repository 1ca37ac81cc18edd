// Package service is gopulsed's side of systemd: readiness and status
// notifications, the watchdog fed by a health check, socket activation,
// and logging to the journal. Every part degrades to nothing (or to
// stderr, or to a socket of our own) when the daemon runs by hand.
package service

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify(3) messages; without NOTIFY_SOCKET it does
// nothing.
type Notifier struct {
	log *slog.Logger
}

// NewNotifier returns a notifier that logs failures to send at debug level.
func NewNotifier(log *slog.Logger) *Notifier { return &Notifier{log: log} }

// Send sends state lines ("READY=1", "STATUS=..."), joined by newlines.
func (n *Notifier) Send(lines ...string) {
	for i, l := range lines {
		// A newline in a STATUS= would end the assignment.
		lines[i] = strings.ReplaceAll(l, "\n", " ")
	}
	if _, err := daemon.SdNotify(false, strings.Join(lines, "\n")); err != nil {
		n.log.Debug("sd_notify failed", "err", err)
	}
}

// Ready says the daemon is serving, with a status line.
func (n *Notifier) Ready(status string) { n.Send(daemon.SdNotifyReady, "STATUS="+status) }

// Status replaces the status line systemctl status shows.
func (n *Notifier) Status(status string) { n.Send("STATUS=" + status) }

// Stopping says the daemon is shutting down.
func (n *Notifier) Stopping() { n.Send(daemon.SdNotifyStopping, "STATUS=stopping") }

// Reloading says a configuration reload began; Ready (or Status with
// READY=1) ends it.
func (n *Notifier) Reloading() {
	lines := []string{daemon.SdNotifyReloading}
	if mono := strings.TrimSpace(daemon.SdNotifyMonotonicUsec()); mono != "" {
		lines = append(lines, mono)
	}
	n.Send(append(lines, "STATUS=reloading configuration")...)
}

// WatchdogInterval returns how often the watchdog must be fed (half of
// WATCHDOG_USEC), or 0 when systemd runs no watchdog for this process.
func WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

// Watchdog feeds systemd's watchdog (WATCHDOG=1) every interval for as
// long as health reports no error. While it reports one, the pings stop
// (and systemd, once WatchdogSec= passes, kills and restarts the daemon);
// the error is logged once and put in the status line. Runs until ctx is
// done; interval <= 0 returns at once.
func Watchdog(ctx context.Context, n *Notifier, log *slog.Logger, interval time.Duration, health func() error) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var failing error
	for {
		err := health()
		switch {
		case err == nil:
			if failing != nil {
				log.Info("health check passes again, feeding the watchdog", "was", failing.Error())
			}
			n.Send(daemon.SdNotifyWatchdog)
		case failing == nil || failing.Error() != err.Error():
			log.Error("health check failed, not feeding the watchdog (systemd will restart gopulsed)", "err", err)
			n.Status("unhealthy: " + err.Error())
		}
		failing = err
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Every calls f now and then every d until ctx is done.
func Every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		f()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Plural formats n and a noun, "1 process", "3 processes".
func Plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
