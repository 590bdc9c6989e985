//! The node's services: started together, stopped together, the first failure reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use blyan_node_core::{BoxError, Error, HoldExpiry, Node, NodeConfig, Service, Services, Shutdown};

/// Waits for shutdown, then records that it saw it.
struct Waits {
    stopped: Arc<AtomicBool>,
}

impl Service for Waits {
    fn name(&self) -> &'static str {
        "waits"
    }

    async fn run(self, _node: Arc<Node>, shutdown: Shutdown) -> Result<(), BoxError> {
        shutdown.requested().await;
        self.stopped.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Fails at once.
struct Fails;

impl Service for Fails {
    fn name(&self) -> &'static str {
        "fails"
    }

    async fn run(self, _node: Arc<Node>, _shutdown: Shutdown) -> Result<(), BoxError> {
        Err("out of disk".into())
    }
}

fn bare_node() -> Arc<Node> {
    Arc::new(Node::new(NodeConfig::defaults()))
}

#[tokio::test]
async fn the_signal_stops_every_service() {
    let stopped = Arc::new(AtomicBool::new(false));
    let mut services = Services::new(bare_node());
    let signal = services.shutdown_signal();
    assert!(!signal.is_requested());
    services.spawn(Waits {
        stopped: Arc::clone(&stopped),
    });
    // A node without a ledger: the expiry service only waits for shutdown.
    services.spawn(HoldExpiry::every(Duration::from_millis(5)));
    services
        .run_until(tokio::time::sleep(Duration::from_millis(50)))
        .await
        .unwrap();
    assert!(
        stopped.load(Ordering::SeqCst),
        "the service saw the shutdown"
    );
    assert!(signal.is_requested());
}

#[tokio::test]
async fn a_failing_service_stops_the_others_and_is_reported() {
    let stopped = Arc::new(AtomicBool::new(false));
    let mut services = Services::new(bare_node());
    services.spawn(Waits {
        stopped: Arc::clone(&stopped),
    });
    services.spawn(Fails);
    let error = services
        .run_until(std::future::pending())
        .await
        .unwrap_err();
    match error {
        Error::Service { service, source } => {
            assert_eq!(service, "fails");
            assert_eq!(source.to_string(), "out of disk");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        stopped.load(Ordering::SeqCst),
        "the other service was stopped"
    );
}

#[tokio::test]
async fn hold_expiry_runs_on_a_node_with_a_ledger_until_shutdown() {
    let test = crate::support::node_with(|_| {}, false).await;
    let mut services = Services::new(Arc::clone(&test.node));
    services.spawn(HoldExpiry::every(Duration::from_millis(5)));
    services
        .run_until(tokio::time::sleep(Duration::from_millis(50)))
        .await
        .unwrap();
}
