//! Published ports of fwmark services, read from the namespace's mangle-table MARK rules.
//!
//! Docker Swarm balances a published port through an IPVS fwmark service in the ingress
//! namespace and marks the port's packets with a rule such as
//! `-A PREROUTING -p tcp -m tcp --dport 30000 -j MARK --set-xmark 0x104/0xffffffff`
//! (it also marks the service VIP with `-A INPUT -d VIP/32 -j MARK --set-xmark 0x104/...`, a rule
//! without a port, which says nothing about the published port and is ignored). [`parse_marks`]
//! turns `iptables-save -t mangle` text (legacy and nft backends print the same syntax) into
//! `mark -> (protocol, port)` for the marks that exactly one protocol and destination port set;
//! [`read_rules`] runs the save commands in the calling thread's namespace
//! (`--no-iptables-save` turns this off).

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::model::Protocol;

/// `mark -> (protocol, destination port)` for the marks with exactly one of them.
pub(super) type PortMap = BTreeMap<u32, (Protocol, u16)>;

/// Errors of running `iptables-save`.
#[derive(Debug, thiserror::Error)]
pub(super) enum MangleError {
    /// The command is not installed (or not in `PATH`).
    #[error("{program} not found in PATH")]
    Missing {
        /// The program.
        program: &'static str,
    },
    /// The command could not be run or failed.
    #[error("{program} failed: {reason}")]
    Failed {
        /// The program.
        program: &'static str,
        /// Exit status and the first line of its error output, or the I/O error.
        reason: String,
    },
    /// The command did not finish in time (it was killed).
    #[error("{program} did not finish within {timeout:?}")]
    Timeout {
        /// The program.
        program: &'static str,
        /// The limit.
        timeout: Duration,
    },
}

/// What the rules setting one mark say about ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    One(Protocol, u16),
    Several,
}

/// One `-A` rule's facts relevant here.
#[derive(Debug, Default, PartialEq, Eq)]
struct Rule {
    protocol: Option<Protocol>,
    /// `Some(Some(port))` for one port, `Some(None)` for a range, a list or a negation.
    dport: Option<Option<u16>>,
    /// Negated protocol (`! -p tcp`): the rule matches several protocols.
    protocol_negated: bool,
    /// The exact mark the rule sets (`MARK` with a full mask).
    mark: Option<u32>,
}

/// Maps marks to the one protocol and destination port their MARK rules set them for.
///
/// Only rules in the `mangle` table whose target is `MARK --set-xmark V/0xffffffff` (or
/// `--set-mark V`, the same thing) are read; a rule that sets the mark with a partial mask, or
/// changes bits (`--or-mark` ...), cannot tell which mark a packet ends with and is ignored.
/// Rules that match a port range, several ports (`multiport`), a negated port or protocol make
/// their mark ambiguous; rules without a destination port (a VIP rule) are ignored.
pub(super) fn parse_marks(text: &str) -> PortMap {
    let mut table = "mangle".to_string();
    let mut uses: BTreeMap<u32, Use> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('*') {
            table = name.trim().to_string();
            continue;
        }
        if table != "mangle" || !line.starts_with("-A ") {
            continue;
        }
        let rule = parse_rule(&split_words(line));
        let Some(mark) = rule.mark else { continue };
        let this = match (rule.protocol, rule.dport) {
            (_, None) => continue, // no port match: says nothing about published ports
            (Some(p), Some(Some(port))) if !rule.protocol_negated => Use::One(p, port),
            _ => Use::Several,
        };
        uses.entry(mark)
            .and_modify(|u| {
                if *u != this {
                    *u = Use::Several;
                }
            })
            .or_insert(this);
    }
    uses.into_iter()
        .filter_map(|(mark, u)| match u {
            Use::One(p, port) => Some((mark, (p, port))),
            Use::Several => None,
        })
        .collect()
}

/// Splits a rule line into words as `iptables-save` quotes them (`--comment "a b"`, `\"`).
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn parse_protocol(s: &str) -> Option<Protocol> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        n => n
            .parse::<u8>()
            .ok()
            .map(|n| Protocol::from_number(n as u16)),
    }
}

/// Parses `0x104`, `260`, with an optional `/mask`; `Some` only when the mask is full.
fn parse_exact_mark(s: &str) -> Option<u32> {
    let (value, mask) = match s.split_once('/') {
        Some((v, m)) => (v, Some(m)),
        None => (s, None),
    };
    let num = |t: &str| match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => t.parse::<u32>().ok(),
    };
    let value = num(value)?;
    match mask {
        None => Some(value),
        Some(m) if num(m)? == u32::MAX => Some(value),
        Some(_) => None,
    }
}

fn parse_rule(words: &[String]) -> Rule {
    let mut rule = Rule::default();
    let mut negate = false;
    let mut target = None;
    let mut i = 2; // after "-A CHAIN"
    while i < words.len() {
        let w = words[i].as_str();
        let arg = words.get(i + 1).map(String::as_str);
        let mut takes_arg = false;
        match w {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-p" | "--protocol" => {
                takes_arg = true;
                rule.protocol = arg.and_then(parse_protocol);
                rule.protocol_negated = negate;
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                takes_arg = true;
                let single = arg.filter(|a| !a.contains([':', ',']));
                rule.dport = Some(match single {
                    Some(p) if !negate => p.parse::<u16>().ok(),
                    _ => None,
                });
            }
            "-j" | "--jump" => {
                takes_arg = true;
                target = arg;
            }
            "--set-xmark" | "--set-mark" if target == Some("MARK") => {
                takes_arg = true;
                rule.mark = arg.and_then(parse_exact_mark);
            }
            _ => {}
        }
        negate = false;
        i += if takes_arg { 2 } else { 1 };
    }
    rule
}

/// The save commands of one address family.
#[derive(Debug, Clone, Copy)]
pub(super) enum SaveCommand {
    /// `iptables-save` (IPv4 rules), with `iptables-legacy-save` when the output says legacy
    /// tables are present as well.
    V4,
    /// `ip6tables-save` (IPv6 rules), likewise.
    V6,
}

impl SaveCommand {
    fn programs(self) -> (&'static str, &'static str) {
        match self {
            SaveCommand::V4 => ("iptables-save", "iptables-legacy-save"),
            SaveCommand::V6 => ("ip6tables-save", "ip6tables-legacy-save"),
        }
    }
}

/// The mangle rules read, and a problem that left part of them unread.
#[derive(Debug, Default)]
pub(super) struct Rules {
    /// `iptables-save` output (both backends' when both were read).
    pub text: String,
    /// Why the legacy tables, present next to the nft ones, could not be read.
    pub legacy_error: Option<MangleError>,
}

/// Reads the mangle table of the calling thread's network namespace as `iptables-save` prints
/// it (the child process inherits the thread's namespace).
///
/// The configured backend's `iptables-save` runs first; when it warns that legacy tables are
/// present too (rules added by an `iptables-legacy` binary: Docker 20.10, an older container
/// image), `iptables-legacy-save` runs as well and both outputs are returned. The legacy tables
/// are read through a raw socket, which needs `CAP_NET_RAW`: its failure is returned in
/// [`Rules::legacy_error`] with the nft rules that were read.
pub(super) fn read_rules(command: SaveCommand, timeout: Duration) -> Result<Rules, MangleError> {
    let deadline = Instant::now() + timeout;
    let (main, legacy) = command.programs();
    let (mut text, err) = run(main, deadline, timeout)?;
    let mut legacy_error = None;
    if text.contains("legacy tables present") || err.contains("legacy tables present") {
        match run(legacy, deadline, timeout) {
            Ok((legacy_out, _)) => {
                text.push('\n');
                text.push_str(&legacy_out);
            }
            Err(e) => legacy_error = Some(e),
        }
    }
    Ok(Rules { text, legacy_error })
}

/// The hint added to a failure of a save command that the kernel refused: legacy tables are
/// read through a raw socket (`CAP_NET_RAW`), nft ones through netlink (`CAP_NET_ADMIN`).
const PERMISSION_HINT: &str = "legacy iptables needs CAP_NET_RAW (nft: CAP_NET_ADMIN); grant it, \
     or pass --no-iptables-save to leave fwmark services without protocol and virtual_port";

/// Runs `program -t mangle` with a deadline; returns stdout and stderr.
fn run(
    program: &'static str,
    deadline: Instant,
    timeout: Duration,
) -> Result<(String, String), MangleError> {
    let failed = |reason: String| MangleError::Failed { program, reason };
    let mut child = Command::new(program)
        .args(["-t", "mangle"])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => MangleError::Missing { program },
            _ => failed(e.to_string()),
        })?;
    // Drain both pipes on helper threads so a large rule set cannot fill a pipe and stall
    // the child while we wait for it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(MangleError::Timeout { program, timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(failed(e.to_string())),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if !status.success() {
        let first = err.lines().next().unwrap_or("").trim().to_string();
        let denied = err.contains("Permission denied") || err.contains("Operation not permitted");
        return Err(failed(if denied {
            format!("{status}: {first} ({PERMISSION_HINT})")
        } else {
            format!("{status}: {first}")
        }));
    }
    Ok((out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `iptables-nft-save -t mangle` of a Swarm-like ingress namespace (captured on 1.8.9).
    const NFT: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables) on Sat Nov 21 05:44:41 2026
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 30000 -j MARK --set-xmark 0x104/0xffffffff
-A PREROUTING -p udp -m udp --dport 30001 -j MARK --set-xmark 0x105/0xffff
-A PREROUTING -p tcp -m multiport --dports 80,443 -j MARK --set-xmark 0x106/0xffffffff
-A PREROUTING -p tcp -m tcp ! --dport 22 -j MARK --set-xmark 0x107/0xffffffff
-A PREROUTING -p sctp -m sctp --dport 99 -j MARK --set-xmark 0x108/0xffffffff
-A OUTPUT -d 10.0.0.2/32 -m comment --comment "a b c" -j MARK --set-xmark 0x104/0xffffffff
COMMIT
# Completed on Sat Nov 21 05:44:41 2026
"#;

    /// `iptables-legacy-save -t mangle` (captured on 1.8.9).
    const LEGACY: &str = "# Generated by iptables-save v1.8.9 on Sat Nov 21 05:44:41 2026
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 30000 -j MARK --set-xmark 0x104/0xffffffff
-A PREROUTING -p udp -m udp --dport 30001 -j MARK --set-xmark 0x105/0xffff
-A PREROUTING -p tcp -j MARK --set-xmark 0x1/0x1
-A PREROUTING -p sctp -m sctp --dport 99 -j MARK --set-xmark 0x108/0xffffffff
COMMIT
";

    #[test]
    fn nft_backend_output() {
        let m = parse_marks(NFT);
        assert_eq!(
            m,
            PortMap::from([
                (0x104, (Protocol::Tcp, 30000)),
                (0x108, (Protocol::Sctp, 99))
            ])
        );
    }

    #[test]
    fn legacy_backend_output() {
        let m = parse_marks(LEGACY);
        assert_eq!(
            m,
            PortMap::from([
                (0x104, (Protocol::Tcp, 30000)),
                (0x108, (Protocol::Sctp, 99))
            ])
        );
    }

    #[test]
    fn swarm_ingress_with_vip_rule_and_legacy_set_mark() {
        // What libnetwork's fwMarker adds (`--set-mark` as typed, decimal), printed by an old
        // iptables that echoes the legacy option, plus the VIP rule of the same mark.
        let text = "*mangle
-A PREROUTING -p tcp --dport 8080 -j MARK --set-mark 257
-A INPUT -d 10.255.0.5/32 -j MARK --set-mark 257
-A PREROUTING -p udp -m udp --destination-port 53 -j MARK --set-mark 0x102
COMMIT
";
        assert_eq!(
            parse_marks(text),
            PortMap::from([(257, (Protocol::Tcp, 8080)), (0x102, (Protocol::Udp, 53))])
        );
    }

    #[test]
    fn a_mark_for_two_ports_or_protocols_is_ambiguous() {
        let text = "*mangle
-A PREROUTING -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x100/0xffffffff
-A PREROUTING -p tcp -m tcp --dport 443 -j MARK --set-xmark 0x100/0xffffffff
-A PREROUTING -p tcp -m tcp --dport 53 -j MARK --set-xmark 0x101/0xffffffff
-A PREROUTING -p udp -m udp --dport 53 -j MARK --set-xmark 0x101/0xffffffff
-A PREROUTING -p tcp -m tcp --dport 9000 -j MARK --set-xmark 0x102/0xffffffff
-A OUTPUT -p tcp -m tcp --dport 9000 -j MARK --set-xmark 0x102/0xffffffff
-A PREROUTING -p tcp -m tcp --dport 7000:7010 -j MARK --set-xmark 0x103/0xffffffff
-A PREROUTING ! -p tcp -m udp --dport 5 -j MARK --set-xmark 0x104/0xffffffff
-A PREROUTING -m tcp --dport 6 -j MARK --set-xmark 0x105/0xffffffff
-A PREROUTING -p tcp -m multiport --dports 8443 -j MARK --set-xmark 0x106/0xffffffff
COMMIT
";
        assert_eq!(
            parse_marks(text),
            PortMap::from([
                (0x102, (Protocol::Tcp, 9000)),
                (0x106, (Protocol::Tcp, 8443))
            ])
        );
    }

    #[test]
    fn other_tables_targets_and_mark_options_are_ignored() {
        let text = "*nat
-A PREROUTING -p tcp -m tcp --dport 1 -j MARK --set-xmark 0x1/0xffffffff
COMMIT
*mangle
-A PREROUTING -p tcp -m tcp --dport 2 -j CONNMARK --set-xmark 0x2/0xffffffff
-A PREROUTING -p tcp -m tcp --dport 3 -j MARK --or-mark 0x3
-A PREROUTING -p tcp -m tcp --dport 4 -m mark --mark 0x4 -j ACCEPT
-A PREROUTING -p tcp -m tcp --dport 5 -j MARK --set-xmark 0x5
-A PREROUTING -p tcp -m tcp --dport 6 -j MARK --set-xmark zz/0xffffffff
-A PREROUTING -p tcp -m tcp --dport 70000 -j MARK --set-xmark 0x7/0xffffffff
-A PREROUTING -p 132 --dport 8 -j MARK --set-xmark 0x8/0xffffffff
-A PREROUTING -p tcp --dport
garbage line
COMMIT
";
        assert_eq!(
            parse_marks(text),
            PortMap::from([(0x5, (Protocol::Tcp, 5)), (0x8, (Protocol::Sctp, 8))])
        );
    }

    #[test]
    fn words_follow_iptables_save_quoting() {
        assert_eq!(
            split_words(r#"-A X -m comment --comment "a \"b\" c" -j MARK"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "MARK"
            ]
        );
        // A quoted comment that looks like options must not be read as options.
        let text = r#"*mangle
-A PREROUTING -m comment --comment "-p udp --dport 1" -p tcp --dport 2 -j MARK --set-xmark 0x9/0xffffffff
"#;
        assert_eq!(parse_marks(text), PortMap::from([(9, (Protocol::Tcp, 2))]));
    }

    #[test]
    fn marks_parse_in_hex_and_decimal_with_full_masks_only() {
        assert_eq!(parse_exact_mark("0x104/0xffffffff"), Some(260));
        assert_eq!(parse_exact_mark("260"), Some(260));
        assert_eq!(parse_exact_mark("0X104/4294967295"), Some(260));
        assert_eq!(parse_exact_mark("0x104/0xff"), None);
        assert_eq!(parse_exact_mark("-1"), None);
    }
}
