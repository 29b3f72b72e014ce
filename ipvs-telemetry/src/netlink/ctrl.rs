//! Finding the IPVS family id through the generic-netlink controller without side effects.
//!
//! `CTRL_CMD_GETFAMILY` with a family name makes kernels ≥ 5.15 call `request_module` and load
//! ip_vs. A dump of every family never loads anything, so the client resolves the id by listing
//! the families and looking for "IPVS": absent means the module is not loaded.

use netlink_packet_core::{DecodeError, NlasIterator, parse_string, parse_u16};
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};

const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// The id of the controller family (`GENL_ID_CTRL`).
pub(crate) const GENL_ID_CTRL: u16 = 0x10;

/// The payload of the family-list dump request.
pub(crate) fn list_families() -> GenlCtrl {
    GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: Vec::new(),
    }
}

/// Returns the family id if this controller message (generic header included) describes `name`.
pub(crate) fn family_id_if_named(payload: &[u8], name: &str) -> Result<Option<u16>, DecodeError> {
    let attrs = payload
        .get(4..)
        .ok_or_else(|| DecodeError::from("controller message shorter than its header"))?;
    let mut id = None;
    let mut matches = false;
    for nla in NlasIterator::new(attrs) {
        let nla = nla?;
        match nla.kind() {
            CTRL_ATTR_FAMILY_ID => id = Some(parse_u16(nla.value())?),
            CTRL_ATTR_FAMILY_NAME => matches = parse_string(nla.value())? == name,
            _ => {}
        }
    }
    Ok(if matches {
        id.filter(|id| *id != 0)
    } else {
        None
    })
}
