//! The services a node runs, and their shared lifetime.
//!
//! A [`Service`] is a long-running part of the node: the HTTP API (`blyan-api`'s
//! `HttpService`), the release of expired payment holds ([`HoldExpiry`]), the learner
//! ([`crate::Learner`]), and later the Proof-of-Learning validator and the peer-to-peer
//! network. Each gets the shared [`Node`] and a [`Shutdown`] signal. [`Services`] starts them on the tokio runtime and stops
//! them together: when the caller's signal fires (Ctrl-C) or when any service ends, every
//! service is asked to stop, and [`Services::run_until`] returns once all have, with the first
//! failure if there was one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use blyan_ledger::{AnyLedger, Ledger as _};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::error::BoxError;
use crate::node::Node;
use crate::{Error, Result};

/// How often [`HoldExpiry`] releases payment holds whose lifetime has passed (a chat whose
/// capture never came, for instance because the node was killed mid-stream).
pub const HOLD_EXPIRY_PERIOD: Duration = Duration::from_secs(60);

/// A long-running part of the node, started by [`Services::spawn`].
///
/// `run` should return when `shutdown` fires, after finishing what it must (draining
/// connections, for instance). Returning earlier, with or without an error, stops the node:
/// every service is meant to live as long as the node.
pub trait Service: Send + 'static {
    /// A short name for logs and errors (`http`, `hold-expiry`).
    fn name(&self) -> &'static str;

    /// Runs the service until `shutdown` fires.
    fn run(
        self,
        node: Arc<Node>,
        shutdown: Shutdown,
    ) -> impl Future<Output = std::result::Result<(), BoxError>> + Send;
}

/// The signal that the node is stopping. Cheap to clone; every clone fires together.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Completes once the node is stopping (at once if it already is).
    pub async fn requested(mut self) {
        // An error means the sender is gone, which also means the node is stopping.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    /// Whether the node is stopping.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

/// The services of a running node.
#[derive(Debug)]
pub struct Services {
    node: Arc<Node>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, std::result::Result<(), BoxError>)>,
}

impl Services {
    /// No services yet, for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        let (stop, _) = watch::channel(false);
        Self {
            node,
            stop,
            tasks: JoinSet::new(),
        }
    }

    /// The node the services share.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// A signal that fires when the services are asked to stop.
    pub fn shutdown_signal(&self) -> Shutdown {
        Shutdown(self.stop.subscribe())
    }

    /// Starts `service` on the current tokio runtime.
    pub fn spawn<S: Service>(&mut self, service: S) {
        let name = service.name();
        let run = service.run(Arc::clone(&self.node), self.shutdown_signal());
        tracing::info!(service = name, "service started");
        self.tasks.spawn(
            async move { (name, run.await) }.instrument(tracing::info_span!("service", name)),
        );
    }

    /// Runs until `signal` completes or a service ends, then stops every service and waits for
    /// them. The first service failure (an error or a panic) is the result.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<()> {
        let mut first_failure = None;
        tokio::select! {
            () = signal => tracing::info!("stopping the node's services"),
            ended = self.tasks.join_next() => {
                if let Some(ended) = ended {
                    record(ended, &mut first_failure, true);
                }
            }
        }
        self.stop.send_replace(true);
        while let Some(ended) = self.tasks.join_next().await {
            record(ended, &mut first_failure, false);
        }
        match first_failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Logs how a service ended and keeps the first failure.
fn record(
    ended: std::result::Result<
        (&'static str, std::result::Result<(), BoxError>),
        tokio::task::JoinError,
    >,
    first_failure: &mut Option<Error>,
    unasked: bool,
) {
    let failure = match ended {
        Ok((name, Ok(()))) => {
            if unasked {
                tracing::warn!(
                    service = name,
                    "service ended on its own: stopping the node"
                );
            } else {
                tracing::info!(service = name, "service stopped");
            }
            None
        }
        Ok((name, Err(source))) => {
            tracing::error!(service = name, error = %source, "service failed");
            Some(Error::Service {
                service: name,
                source,
            })
        }
        Err(panicked) => {
            tracing::error!(error = %panicked, "a service panicked");
            Some(Error::Service {
                service: "unknown",
                source: Box::new(panicked),
            })
        }
    };
    if first_failure.is_none() {
        *first_failure = failure;
    }
}

/// Releases expired payment holds every [`HOLD_EXPIRY_PERIOD`], as long as the node runs. A
/// node without a ledger has nothing to release: the service then only waits for shutdown.
#[derive(Debug, Clone, Copy)]
pub struct HoldExpiry {
    period: Duration,
}

impl Default for HoldExpiry {
    fn default() -> Self {
        Self {
            period: HOLD_EXPIRY_PERIOD,
        }
    }
}

impl HoldExpiry {
    /// Releases expired holds every `period` (at least a millisecond).
    pub fn every(period: Duration) -> Self {
        Self {
            period: period.max(Duration::from_millis(1)),
        }
    }
}

async fn expire_once(ledger: &AnyLedger) {
    match ledger.expire_holds().await {
        Ok(expired) if !expired.is_empty() => {
            tracing::info!(count = expired.len(), "released expired payment holds");
        }
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "cannot expire payment holds"),
    }
}

impl Service for HoldExpiry {
    fn name(&self) -> &'static str {
        "hold-expiry"
    }

    async fn run(self, node: Arc<Node>, shutdown: Shutdown) -> std::result::Result<(), BoxError> {
        let Some(ledger) = node.ledger().cloned() else {
            shutdown.requested().await;
            return Ok(());
        };
        let mut ticks = tokio::time::interval(self.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopping = shutdown.requested();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                () = &mut stopping => return Ok(()),
                _ = ticks.tick() => expire_once(&ledger).await,
            }
        }
    }
}
