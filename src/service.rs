//! Running under a service manager (systemd `Type=notify`): READY=1 once
//! `/readyz` would say ready, WATCHDOG=1 while the serving loops answer,
//! RELOADING=1 / READY=1 around a SIGHUP reload, STOPPING=1 at shutdown.
//!
//! Without `NOTIFY_SOCKET` in the environment every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends `states` to the service manager, if there is one.
pub fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "telling the service manager (NOTIFY_SOCKET)");
    }
}

/// The interval systemd expects a ping in (`WatchdogSec`), if it asks for
/// pings from this process.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0).then(|| Duration::from_micros(usec))
}

/// Tells the manager the service is ready, with a one-line status.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload began; [`ready`] ends it.
pub fn reloading() {
    // systemd 253+ wants the monotonic time with RELOADING=1 (for
    // Type=notify-reload); older ones ignore it.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}
