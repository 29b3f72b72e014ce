//! The IPVS connection-synchronisation daemon family.

use std::fmt;

use super::{Kind, Num, Samples, Sink};
use crate::metrics::Inputs;
use crate::metrics::labels::StaticLabels;

/// `ipvs_sync_daemon_info`: one series per sync daemon per namespace.
pub(super) fn sync_daemon_families<S: Sink>(inputs: &Inputs, sink: &mut S) -> fmt::Result {
    let namespaces = &inputs.snapshot.namespaces;
    if namespaces
        .iter()
        .all(|ns| ns.context.sync_daemons.is_empty())
    {
        return Ok(());
    }
    let mut f = sink.family(
        "ipvs_sync_daemon_info",
        "An IPVS connection-synchronisation daemon running in the namespace (IPVS_CMD_GET_DAEMON): role master or backup, multicast interface and sync id; always 1.",
        Kind::Gauge,
    )?;
    for ns in namespaces {
        for d in &ns.context.sync_daemons {
            let id = d.sync_id.to_string();
            let l = [
                ("netns", ns.netns.name.as_str()),
                ("role", d.role.as_str()),
                ("interface", d.interface.as_str()),
                ("sync_id", id.as_str()),
            ];
            f.gauge(&StaticLabels(&l), Num::U(1))?;
        }
    }
    Ok(())
}
