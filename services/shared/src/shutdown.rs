//! Shutdown as a value passed around (mini-redis style).
//!
//! Kubernetes sends SIGTERM, waits the grace period, then SIGKILLs. On SIGTERM
//! (or Ctrl-C) the [`Shutdown`] flips once; readiness turns 503 at that moment,
//! servers stop accepting and drain, workers finish their current batch.

use tokio::sync::watch;

/// A cloneable handle that resolves once shutdown has begun.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The side that triggers shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when shutdown begins (immediately if it already has).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger is gone, which only happens at exit: treat as shutdown.
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                    _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers; falling back to Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Spawns a task that triggers shutdown on a signal and returns the handle.
pub fn on_signal() -> (ShutdownTrigger, Shutdown) {
    let (trigger, shutdown) = channel();
    let tx = trigger.tx.clone();
    tokio::spawn(async move {
        signal().await;
        tx.send_replace(true);
    });
    (trigger, shutdown)
}

/// A shutdown that fires `delay` after `shutdown`: servers keep serving (while
/// already unready) so load balancers stop routing here before we stop accepting.
pub fn after_delay(shutdown: Shutdown, delay: std::time::Duration) -> Shutdown {
    let (trigger, delayed) = channel();
    tokio::spawn(async move {
        shutdown.wait().await;
        tokio::time::sleep(delay).await;
        trigger.trigger();
    });
    delayed
}
