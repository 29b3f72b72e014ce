//! Network namespace discovery and per-namespace netlink sockets.
//!
//! The only module that calls `setns`: each namespace's socket is created on a dedicated thread
//! that enters the namespace file and returns before anything else runs on it.

use std::time::{Duration, Instant, SystemTime};

use crate::cli::CommonOpts;
use crate::model::{NamespaceSnapshot, NetnsContext, NetnsId, Snapshot};

/// Collects every selected namespace. Placeholder: only the daemon's own namespace.
pub struct Collector {
    timeout: Duration,
}

impl Collector {
    /// Builds the collector from the namespace flags; `Err` is a one-line message (exit 2).
    pub fn new(_opts: &CommonOpts, timeout: Duration) -> Result<Self, String> {
        Ok(Collector { timeout })
    }

    /// One collection of every selected namespace.
    pub async fn collect(&mut self) -> Snapshot {
        let timeout = self.timeout;
        let start = Instant::now();
        let ipvs =
            tokio::task::spawn_blocking(move || crate::netlink::read_current_namespace(timeout))
                .await
                .unwrap_or_else(|e| {
                    Err(crate::model::CollectFailure {
                        reason: crate::model::ErrorReason::Io,
                        message: format!("collection task failed: {e}"),
                    })
                });
        let (dev, inode) = std::fs::metadata("/proc/self/ns/net")
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            })
            .unwrap_or((0, 0));
        Snapshot {
            namespaces: vec![NamespaceSnapshot {
                netns: NetnsId {
                    name: "host".into(),
                    dev,
                    inode,
                },
                ipvs,
                context: NetnsContext::default(),
                duration: start.elapsed(),
                timestamp: SystemTime::now(),
            }],
        }
    }
}
