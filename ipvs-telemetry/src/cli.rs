//! The command line of `../shared/spec/CLI.md`: flags, their environment variables, and parsing
//! of the values they take (durations, listen addresses, regular expressions).
//!
//! Parsing never panics: every bad value becomes one line on stderr and exit status 2.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use regex::Regex;

/// Version string printed by `--version`: the crate version and the git revision.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("IPVS_TELEMETRY_REVISION"),
    ")"
);

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "ipvs-telemetry",
    version = VERSION,
    about = "Prometheus telemetry for Linux IPVS: exact netlink counters from every network namespace and eBPF connection histograms",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options shared by every command.
    #[command(flatten)]
    pub common: CommonOpts,
    /// Options of the daemon (accepted before `serve` as well).
    #[command(flatten)]
    pub serve: ServeOpts,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Read IPVS once from every selected namespace and print it.
    Snapshot(SnapshotOpts),
}

/// Options of `snapshot`.
#[derive(Debug, Clone, Args)]
pub struct SnapshotOpts {
    /// Output format: `table` (like `ipvsadm -Ln --stats --exact`), `json` or `prometheus`.
    #[arg(long, value_enum, default_value_t = SnapshotFormat::Table, env = "IPVS_TELEMETRY_FORMAT")]
    pub format: SnapshotFormat,
    /// Hidden (tests, benchmarks): collect this many times in the same process.
    #[arg(long, hide = true, default_value_t = 1)]
    pub repeat: u64,
    /// Hidden: pause between repeated collections.
    #[arg(long, hide = true, value_name = "DURATION", default_value = "1s",
          value_parser = parse_duration)]
    pub interval: Duration,
}

/// Output formats of `snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotFormat {
    /// One block per namespace, laid out like `ipvsadm -Ln --stats --exact`.
    Table,
    /// Every field, as JSON.
    Json,
    /// The metric series in the Prometheus text format 0.0.4.
    Prometheus,
}

/// Namespace selection and logging, used by every command.
#[derive(Debug, Clone, Args)]
pub struct CommonOpts {
    /// A namespace file to watch, optionally named (`NAME=PATH`); repeatable.
    #[arg(long = "netns", visible_alias = "namespace-path", value_name = "[NAME=]PATH",
          value_parser = parse_netns_arg, global = true, env = "IPVS_TELEMETRY_NETNS", value_delimiter = ',')]
    pub netns: Vec<NetnsArg>,
    /// Every entry of DIR is a namespace (rescanned every poll); repeatable.
    #[arg(
        long = "netns.discover",
        value_name = "DIR",
        global = true,
        env = "IPVS_TELEMETRY_NETNS_DISCOVER",
        value_delimiter = ','
    )]
    pub netns_discover: Vec<PathBuf>,
    /// Only namespaces whose name matches.
    #[arg(long = "netns.include", value_name = "REGEX", value_parser = parse_regex, global = true,
          env = "IPVS_TELEMETRY_NETNS_INCLUDE")]
    pub netns_include: Option<Regex>,
    /// Leave out namespaces whose name matches (wins over include).
    #[arg(long = "netns.exclude", value_name = "REGEX", value_parser = parse_regex, global = true,
          env = "IPVS_TELEMETRY_NETNS_EXCLUDE")]
    pub netns_exclude: Option<Regex>,
    /// Include the daemon's own namespace (`netns="host"`) [default].
    #[arg(long = "netns.host", overrides_with = "no_netns_host", global = true)]
    pub netns_host: bool,
    /// Leave out the daemon's own namespace.
    #[arg(
        long = "no-netns.host",
        overrides_with = "netns_host",
        global = true,
        env = "IPVS_TELEMETRY_NO_NETNS_HOST"
    )]
    pub no_netns_host: bool,
    /// Interfaces included in the per-namespace interface series.
    #[arg(long = "netns.devices.include", value_name = "REGEX", value_parser = parse_regex,
          global = true, env = "IPVS_TELEMETRY_NETNS_DEVICES_INCLUDE")]
    pub devices_include: Option<Regex>,
    /// Interfaces left out of the per-namespace interface series.
    #[arg(long = "netns.devices.exclude", value_name = "REGEX", value_parser = parse_regex,
          default_value = "^lo$", global = true, env = "IPVS_TELEMETRY_NETNS_DEVICES_EXCLUDE")]
    pub devices_exclude: Regex,
    /// Log level.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info, global = true,
          env = "IPVS_TELEMETRY_LOG_LEVEL")]
    pub log_level: LogLevel,
    /// Log format.
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Logfmt, global = true,
          env = "IPVS_TELEMETRY_LOG_FORMAT")]
    pub log_format: LogFormat,
}

impl CommonOpts {
    /// Whether the daemon's own namespace is collected.
    pub fn include_host(&self) -> bool {
        !self.no_netns_host
    }
}

/// Options of the daemon.
#[derive(Debug, Clone, Args)]
pub struct ServeOpts {
    /// Address to listen on (`:PORT`, `HOST:PORT`, `[V6]:PORT`); repeatable.
    #[arg(
        long = "web.listen-address",
        visible_alias = "listen-address",
        value_name = "ADDR",
        default_value = ":10054",
        global = true,
        env = "IPVS_TELEMETRY_WEB_LISTEN_ADDRESS",
        value_delimiter = ','
    )]
    pub listen_addresses: Vec<String>,
    /// Path of the metrics endpoint.
    #[arg(long = "web.telemetry-path", visible_alias = "telemetry-path", value_name = "PATH",
          default_value = "/metrics", value_parser = parse_http_path, global = true,
          env = "IPVS_TELEMETRY_WEB_TELEMETRY_PATH")]
    pub telemetry_path: String,
    /// TLS and basic-auth file in the exporter-toolkit web-config format.
    #[arg(
        long = "web.config.file",
        value_name = "FILE",
        global = true,
        env = "IPVS_TELEMETRY_WEB_CONFIG_FILE"
    )]
    pub web_config_file: Option<PathBuf>,
    /// Requests served at once; further ones get 503.
    #[arg(
        long = "web.max-requests",
        value_name = "N",
        default_value_t = 40,
        global = true,
        env = "IPVS_TELEMETRY_WEB_MAX_REQUESTS"
    )]
    pub max_requests: usize,
    /// Netlink collection period.
    #[arg(long = "poll.interval", value_name = "DURATION", default_value = "1s",
          value_parser = parse_positive_duration, global = true, env = "IPVS_TELEMETRY_POLL_INTERVAL")]
    pub poll_interval: Duration,
    /// eBPF probes: `auto` attaches if possible, `on` fails to start without them.
    #[arg(long = "ebpf", value_enum, default_value_t = EbpfMode::Auto, global = true,
          env = "IPVS_TELEMETRY_EBPF")]
    pub ebpf: EbpfMode,
    /// Window of the connection-rate histogram.
    #[arg(long = "ebpf.rate-window", value_name = "DURATION", default_value = "100ms",
          value_parser = parse_positive_duration, global = true, env = "IPVS_TELEMETRY_EBPF_RATE_WINDOW")]
    pub ebpf_rate_window: Duration,
    /// How long a NAT/local connection may wait for its first reply before it counts in
    /// `ipvs_ebpf_destination_waiting_connections`.
    #[arg(long = "ebpf.unanswered-after", value_name = "DURATION", default_value = "5s",
          value_parser = parse_positive_duration, global = true, env = "IPVS_TELEMETRY_EBPF_UNANSWERED_AFTER")]
    pub ebpf_unanswered_after: Duration,
    /// Label set of the eBPF histograms.
    #[arg(long = "ebpf.granularity", value_enum, default_value_t = Granularity::Destination,
          global = true, env = "IPVS_TELEMETRY_EBPF_GRANULARITY")]
    pub ebpf_granularity: Granularity,
    /// Most destinations tracked by the eBPF consumer; more are counted as overflow.
    #[arg(
        long = "ebpf.max-destinations",
        value_name = "N",
        default_value_t = 100_000,
        global = true,
        env = "IPVS_TELEMETRY_EBPF_MAX_DESTINATIONS"
    )]
    pub ebpf_max_destinations: usize,
}

/// `--ebpf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EbpfMode {
    /// Attach if possible, else serve netlink metrics and say why.
    Auto,
    /// Fail to start without the probes.
    On,
    /// Never load the probes.
    Off,
}

impl EbpfMode {
    /// The `mode` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EbpfMode::Auto => "auto",
            EbpfMode::On => "on",
            EbpfMode::Off => "off",
        }
    }
}

/// `--ebpf.granularity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Granularity {
    /// One histogram per destination.
    Destination,
    /// One histogram per service.
    Service,
}

/// `--log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation.
    Info,
    /// Everything.
    Debug,
}

/// `--log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `key=value` pairs.
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// A `--netns [NAME=]PATH` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsArg {
    /// The name given, or `None` to use the file name.
    pub name: Option<String>,
    /// The namespace file.
    pub path: PathBuf,
}

fn parse_netns_arg(s: &str) -> Result<NetnsArg, String> {
    if s.is_empty() {
        return Err("empty namespace path".into());
    }
    // A path may contain '=', a name may not contain '/': split at the first '=' only when
    // what precedes it looks like a name.
    if let Some((name, path)) = s.split_once('=')
        && !name.contains('/')
    {
        if name.is_empty() {
            return Err(format!("empty namespace name in {s:?}"));
        }
        if path.is_empty() {
            return Err(format!("empty namespace path in {s:?}"));
        }
        return Ok(NetnsArg {
            name: Some(name.to_string()),
            path: PathBuf::from(path),
        });
    }
    Ok(NetnsArg {
        name: None,
        path: PathBuf::from(s),
    })
}

fn parse_regex(s: &str) -> Result<Regex, String> {
    Regex::new(s).map_err(|e| {
        // regex's messages span several lines; keep the last, which names the problem.
        let msg = e.to_string();
        let last = msg
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid");
        format!(
            "invalid regular expression {s:?}: {}",
            last.trim().trim_start_matches("error: ")
        )
    })
}

fn parse_http_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with '/'"));
    }
    Ok(s.to_string())
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be greater than zero"));
    }
    Ok(d)
}

/// Parses a Prometheus duration: `250ms`, `2s`, `1m30s`, `1h`, `1d`, `1w`, `1y`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 250ms, 2s, 1m)");
    if s.is_empty() {
        return Err(bad());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .filter(|v| *v <= u64::MAX as u128)
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(total as u64))
}

/// Parses a listen address: `:PORT` (every address), `HOST:PORT` or `[V6]:PORT`.
pub fn parse_listen_address(s: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
    let bad = |why: &str| format!("invalid listen address {s:?}: {why}");
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT or :PORT"))?;
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    if host.is_empty() {
        // Like Go's net.Listen(":PORT"): every address, IPv6 and IPv4.
        return Ok(vec![
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
        ]);
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(bad("host has no address"));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "1", "s", "1.5s", "-1s", "1x", "99999999999999999999y"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn netns_args() {
        assert_eq!(
            parse_netns_arg("ingress=/var/run/docker/netns/ingress_sbox").unwrap(),
            NetnsArg {
                name: Some("ingress".into()),
                path: "/var/run/docker/netns/ingress_sbox".into()
            }
        );
        assert_eq!(
            parse_netns_arg("/run/netns/a=b").unwrap(),
            NetnsArg {
                name: None,
                path: "/run/netns/a=b".into()
            }
        );
        assert!(parse_netns_arg("=/x").is_err());
        assert!(parse_netns_arg("").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_address(":10054").unwrap().len(), 2);
        assert_eq!(
            parse_listen_address("127.0.0.1:9").unwrap(),
            vec!["127.0.0.1:9".parse().unwrap()]
        );
        assert_eq!(
            parse_listen_address("[::1]:9").unwrap(),
            vec!["[::1]:9".parse().unwrap()]
        );
        assert!(parse_listen_address("10054").is_err());
        assert!(parse_listen_address(":99999").is_err());
    }

    #[test]
    fn cli_defaults_and_aliases() {
        let cli = Cli::try_parse_from(["ipvs-telemetry"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen_addresses, vec![":10054"]);
        assert_eq!(cli.serve.poll_interval, Duration::from_secs(1));
        assert!(cli.common.include_host());
        let cli = Cli::try_parse_from([
            "ipvs-telemetry",
            "serve",
            "--listen-address",
            ":1",
            "--namespace-path",
            "/var/run/docker/netns/ingress_sbox",
            "--no-netns.host",
        ])
        .unwrap();
        assert_eq!(cli.serve.listen_addresses, vec![":1"]);
        assert_eq!(cli.common.netns.len(), 1);
        assert!(!cli.common.include_host());
        let cli = Cli::try_parse_from(["ipvs-telemetry", "snapshot", "--format", "json"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Snapshot(SnapshotOpts {
                format: SnapshotFormat::Json,
                ..
            }))
        ));
        assert!(Cli::try_parse_from(["ipvs-telemetry", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["ipvs-telemetry", "--netns.include", "("]).is_err());
    }
}
