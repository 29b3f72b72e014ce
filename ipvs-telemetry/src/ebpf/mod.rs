//! The eBPF side: probe loading with BTF-derived offsets, the ring-buffer consumer and the
//! per-destination histograms.

use crate::cli::ServeOpts;
use crate::model::{EbpfSnapshot, Snapshot};

/// The running eBPF side (probes, consumer, histograms). Placeholder until the eBPF issue lands.
pub struct Ebpf {
    mode: &'static str,
}

impl Ebpf {
    /// Loads and attaches the probes per `--ebpf`. `Err` (a one-line cause) only with
    /// `--ebpf on`; with `auto` a failure is reported through [`Ebpf::snapshot`].
    pub async fn start(opts: &ServeOpts) -> Result<Ebpf, String> {
        Ok(Ebpf {
            mode: opts.ebpf.as_str(),
        })
    }

    /// The current series; destinations absent from `netlink` are forgotten.
    pub fn snapshot(&self, _netlink: &Snapshot) -> EbpfSnapshot {
        EbpfSnapshot {
            up: false,
            mode: self.mode.into(),
            reason: "not implemented".into(),
            ..Default::default()
        }
    }
}
