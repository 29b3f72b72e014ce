//! Where the first-response kprobes attach and where they find their arguments: the protocol
//! state handlers (`tcp_state_transition`, ...) are static functions, so their symbol may carry
//! a compiler suffix (`.isra.0`, `.constprop.0`) in `/proc/kallsyms`, and their signature
//! changed in stable kernels (an argument was added). The positions of `cp` and `direction`
//! are read from each handler's prototype in the module BTF rather than assumed per version.

use std::path::Path;

use ipvs_telemetry_common::{STATE_PROBES, StateArgs};

use super::btf::{self, Btf, LoadError};

/// The handlers found: the symbol to attach to (or why not) and the argument positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handlers {
    /// Argument positions for the probes, indexed like [`STATE_PROBES`].
    pub args: StateArgs,
    /// Exact kallsyms name per handler, or a one-line reason it cannot be probed.
    pub symbols: [Result<String, String>; 3],
}

/// The kallsyms name of `function`: the exact name if present, else the first
/// `function.<suffix>` (a static function the compiler specialised).
pub fn find_symbol(kallsyms: &str, function: &str) -> Option<String> {
    let mut suffixed = None;
    for line in kallsyms.lines() {
        let Some(name) = line.split_whitespace().nth(2) else {
            continue;
        };
        if name == function {
            return Some(name.into());
        }
        if suffixed.is_none()
            && name
                .strip_prefix(function)
                .is_some_and(|rest| rest.starts_with('.'))
        {
            suffixed = Some(name.to_string());
        }
    }
    suffixed
}

/// Why a handler's prototype does not give the argument positions.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PositionError {
    /// No parameter of that name.
    #[error("its prototype ({params}) has no parameter {name}")]
    Missing {
        /// The prototype's parameter names, comma-separated.
        params: String,
        /// The parameter looked for.
        name: &'static str,
    },
    /// The parameter is passed on the stack, which a kprobe cannot read.
    #[error("arguments beyond the sixth ({params})")]
    BeyondSixth {
        /// The prototype's parameter names, comma-separated.
        params: String,
    },
}

/// Positions of the parameters named `cp` and `direction`.
pub fn positions(params: &[String]) -> Result<(u32, u32), PositionError> {
    let at = |name: &'static str| {
        params
            .iter()
            .position(|p| p == name)
            .map(|i| i as u32)
            .ok_or_else(|| PositionError::Missing {
                params: params.join(", "),
                name,
            })
    };
    let (cp, direction) = (at("cp")?, at("direction")?);
    // x86-64 passes the first six arguments in registers, which is all a kprobe can read.
    if cp > 5 || direction > 5 {
        return Err(PositionError::BeyondSixth {
            params: params.join(", "),
        });
    }
    Ok((cp, direction))
}

/// Resolves every handler from the BTF under `btf_dir` and the symbol table `kallsyms`.
pub fn resolve(btf_dir: &Path, kallsyms: &Path) -> Handlers {
    let symbols_text = std::fs::read_to_string(kallsyms)
        .map_err(|e| format!("reading {}: {e}", kallsyms.display()));
    let btf = load_btf(btf_dir).map_err(|e| e.to_string());
    let mut args = StateArgs::default();
    let symbols = std::array::from_fn(|i| {
        let function = STATE_PROBES[i].0;
        let text = symbols_text.as_ref().map_err(Clone::clone)?;
        let symbol = find_symbol(text, function)
            .ok_or_else(|| format!("{function} is not in {}", kallsyms.display()))?;
        let btf = btf.as_ref().map_err(Clone::clone)?;
        let params = btf
            .function_params(function)
            .map_err(|e| format!("{e} (needed for its argument positions)"))?;
        let (cp, direction) = positions(&params).map_err(|e| format!("{function}: {e}"))?;
        tracing::info!(
            "ebpf: {symbol}({}): cp is argument {cp}, direction argument {direction}",
            params.join(", ")
        );
        args.cp[i] = cp;
        args.direction[i] = direction;
        Ok(symbol)
    });
    Handlers { args, symbols }
}

fn load_btf(dir: &Path) -> Result<Btf, LoadError> {
    let mut btf = Btf::parse(btf::read_file(dir, "vmlinux")?)?;
    if let Ok(module) = btf::read_file(dir, "ip_vs") {
        btf.add_split(module)?;
    }
    Ok(btf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_symbol_wins_over_suffixed_ones() {
        let syms = "ffffffffc0a01000 t tcp_state_transition.isra.0\t[ip_vs]\n\
                    ffffffffc0a02000 t udp_state_transition.constprop.0\t[ip_vs]\n\
                    ffffffffc0a03000 t tcp_state_transition\t[ip_vs]\n\
                    ffffffffc0a04000 t tcp_state_transition_x\t[ip_vs]\n";
        assert_eq!(
            find_symbol(syms, "tcp_state_transition").as_deref(),
            Some("tcp_state_transition")
        );
        assert_eq!(
            find_symbol(syms, "udp_state_transition").as_deref(),
            Some("udp_state_transition.constprop.0")
        );
        assert_eq!(find_symbol(syms, "sctp_state_transition"), None);
        assert_eq!(
            find_symbol("tcp_state_transition_x", "tcp_state_transition"),
            None
        );
    }

    /// Without BTF (or without the symbol) every handler has a one-line reason and the
    /// positions keep their defaults; nothing panics.
    #[test]
    fn missing_btf_or_symbol_gives_reasons() {
        let dir = std::env::temp_dir().join(format!("state-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let syms = dir.join("kallsyms");
        std::fs::write(&syms, "ffffffffc0a03000 t tcp_state_transition\t[ip_vs]\n").unwrap();
        let h = resolve(&dir.join("no-btf"), &syms);
        assert_eq!(h.args, StateArgs::default());
        assert!(
            h.symbols[0]
                .as_ref()
                .unwrap_err()
                .contains("no-btf/vmlinux")
        );
        assert!(
            h.symbols[1]
                .as_ref()
                .unwrap_err()
                .starts_with("udp_state_transition is not in")
        );
        let h = resolve(&dir, &dir.join("missing"));
        assert!(h.symbols[2].as_ref().unwrap_err().contains("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn positions_follow_the_prototype() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // 6.1: (cp, direction, skb, pd)
        assert_eq!(positions(&p(&["cp", "direction", "skb", "pd"])), Ok((0, 1)));
        // An added leading argument moves both.
        assert_eq!(
            positions(&p(&["ipvs", "cp", "direction", "skb", "pd"])),
            Ok((1, 2))
        );
        assert!(
            positions(&p(&["c", "direction"]))
                .unwrap_err()
                .to_string()
                .contains("no parameter cp")
        );
    }
}
