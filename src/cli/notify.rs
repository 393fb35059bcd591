//! What `serve` tells a service manager that started it with
//! `Type=notify` (systemd's notify protocol, sd_notify(3)): `STATUS=`
//! lines as it starts, `READY=1` once it listens, `RELOADING=1` (with
//! `MONOTONIC_USEC`) and `READY=1` again around a SIGHUP's reload,
//! `STOPPING=1` when asked to stop, and `WATCHDOG=1` at half the interval
//! the manager set in `WATCHDOG_USEC`. Without `NOTIFY_SOCKET` nothing is
//! sent. The sd-notify crate speaks the protocol (abstract sockets
//! included).

use std::time::Duration;

use sd_notify::NotifyState;

/// Says what the server is doing to the service manager, if there is one.
#[derive(Clone, Copy)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// The service manager named by `NOTIFY_SOCKET`, if set.
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        // A manager that cannot be told is no reason to stop serving.
        if let Err(err) = sd_notify::notify(states) {
            tracing::warn!(%err, "cannot notify the service manager (NOTIFY_SOCKET)");
        }
    }

    /// A status line, while nothing else changes.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// The server listens and answers.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload (SIGHUP) starts; [`Self::ready`] says it ended.
    pub fn reloading(&self) {
        let mut states = vec![
            NotifyState::Reloading,
            NotifyState::Status("reloading the TLS files and the cloud API keys"),
        ];
        // systemd 253 and later want the time of the request with it.
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    /// The server stops: in-flight calls finish, nothing new is taken.
    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: finishing in-flight calls"),
        ]);
    }

    /// Pings the manager's watchdog at half its interval, for as long as
    /// the runtime runs its tasks: a runtime stuck for the whole interval
    /// gets the server restarted. `None` when no watchdog is set. A store
    /// that refuses writes does not stop the pings: health says so, and a
    /// restart would not heal it.
    pub fn watchdog(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let interval = sd_notify::watchdog_enabled().filter(|_| self.enabled)?;
        let notifier = *self;
        Some(async move {
            let mut ticks = tokio::time::interval((interval / 2).max(Duration::from_millis(1)));
            loop {
                ticks.tick().await;
                notifier.send(&[NotifyState::Watchdog]);
            }
        })
    }
}
