//! The command line of docs/cli.md: flags, their environment variables, and parsing of the
//! values they take (durations, listen addresses, regular expressions, booleans).
//!
//! Each command takes only its own flags: `snapshot --ebpf on` is a usage error, not a flag
//! silently ignored. The daemon's flags are also accepted without a command
//! (`ipvs-telemetry --web.listen-address :9` is `ipvs-telemetry serve --web.listen-address :9`).
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
    disable_help_subcommand = true,
    // Flags before a command belong to the implied `serve`: `--ebpf on snapshot` is an error.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Namespace and logging options of the implied `serve` (no command given).
    #[command(flatten)]
    pub common: CommonOpts,
    /// Options of the implied `serve` (no command given).
    #[command(flatten)]
    pub serve: ServeOpts,
    /// Exposition options of the implied `serve` (no command given).
    #[command(flatten)]
    pub metrics: MetricsOpts,
}

/// What the exposition carries: the cardinality controls of docs/sizing.md (`serve` and
/// `snapshot --format prometheus`).
#[derive(Debug, Clone, Args)]
pub struct MetricsOpts {
    /// Export the kernel's 2-second estimator gauges (`*_estimated_*_per_second`).
    #[arg(long = "metrics.estimator", env = "IPVS_TELEMETRY_METRICS_ESTIMATOR",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub estimator: bool,
    /// Family groups to leave out (comma separated; see docs/sizing.md).
    #[arg(long = "metrics.exclude", value_name = "GROUP",
          env = "IPVS_TELEMETRY_METRICS_EXCLUDE", value_delimiter = ',',
          value_parser = crate::metrics::options::parse_group)]
    pub exclude: Vec<crate::metrics::options::Group>,
    /// Services whose destinations get their own series: `all`, `none`, or conditions
    /// `netns=NAME,vip=CIDR,port=N,protocol=P,fwmark=N` that must all hold; repeatable.
    #[arg(long = "metrics.destinations", value_name = "SELECTOR",
          env = "IPVS_TELEMETRY_METRICS_DESTINATIONS", value_delimiter = ';',
          value_parser = crate::metrics::options::parse_selector)]
    pub destinations: Vec<crate::metrics::options::Destinations>,
    /// Most service and destination series in one scrape (0: no limit); whole groups are left
    /// out from the end of the namespace and service order.
    #[arg(long = "metrics.max-series", value_name = "N",
          default_value_t = crate::metrics::options::DEFAULT_MAX_SERIES,
          env = "IPVS_TELEMETRY_METRICS_MAX_SERIES")]
    pub max_series: usize,
}

impl MetricsOpts {
    /// The export options these flags describe.
    pub fn export_options(&self) -> Result<crate::metrics::ExportOptions, String> {
        Ok(crate::metrics::ExportOptions {
            estimator: self.estimator,
            excluded: self.exclude.clone(),
            destinations: crate::metrics::options::merge_selectors(self.destinations.clone()),
            max_series: self.max_series,
        })
    }
}

impl Cli {
    /// The command to run: the one given, else `serve` with the flags given without one.
    pub fn into_command(self) -> Command {
        match self.command {
            Some(c) => c,
            None => Command::Serve(ServeCommand {
                common: self.common,
                serve: self.serve,
                metrics: self.metrics,
            }),
        }
    }
}

/// The subcommands.
// Parsed once at start: the size of the daemon's options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Serve(ServeCommand),
    /// Read IPVS once from every selected namespace and print it.
    Snapshot(SnapshotCommand),
    /// What the director is doing now, from a running daemon's JSON API (`--from URL`).
    Top(TopCommand),
}

impl Command {
    /// The namespace and logging options of the command.
    pub fn common(&self) -> &CommonOpts {
        match self {
            Command::Serve(c) => &c.common,
            Command::Snapshot(c) => &c.common,
            Command::Top(c) => &c.common,
        }
    }

    /// [`Command::common`], to apply [`CommonOpts::resolve_env`].
    pub fn common_mut(&mut self) -> &mut CommonOpts {
        match self {
            Command::Serve(c) => &mut c.common,
            Command::Snapshot(c) => &mut c.common,
            Command::Top(c) => &mut c.common,
        }
    }
}

/// `serve`: the namespace and logging options plus the daemon's own.
#[derive(Debug, Clone, Args)]
pub struct ServeCommand {
    /// Namespace selection and logging.
    #[command(flatten)]
    pub common: CommonOpts,
    /// Options of the daemon.
    #[command(flatten)]
    pub serve: ServeOpts,
    /// What the exposition carries.
    #[command(flatten)]
    pub metrics: MetricsOpts,
}

/// `snapshot`: the namespace and logging options plus the output format.
#[derive(Debug, Clone, Args)]
pub struct SnapshotCommand {
    /// Namespace selection and logging.
    #[command(flatten)]
    pub common: CommonOpts,
    /// Options of `snapshot`.
    #[command(flatten)]
    pub snapshot: SnapshotOpts,
    /// What `--format prometheus` carries.
    #[command(flatten)]
    pub metrics: MetricsOpts,
}

/// `top`: logging plus its own options.
#[derive(Debug, Clone, Args)]
pub struct TopCommand {
    /// Logging (the namespace selection is the daemon's).
    #[command(flatten)]
    pub common: CommonOpts,
    /// Options of `top`.
    #[command(flatten)]
    pub top: TopOpts,
}

/// Options of `top` (docs/cli.md).
#[derive(Debug, Clone, Args)]
pub struct TopOpts {
    /// The daemon to read: `http://HOST:PORT` or `https://HOST:PORT` (its --web.listen-address).
    #[arg(long, value_name = "URL", env = "IPVS_TELEMETRY_FROM")]
    pub from: String,
    /// CA certificate (PEM) that verifies an `https` daemon.
    #[arg(
        long = "from.ca-file",
        value_name = "PATH",
        env = "IPVS_TELEMETRY_FROM_CA_FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// Basic-auth user (the daemon's web-config `basic_auth_users`).
    #[arg(
        long = "from.user",
        value_name = "USER",
        env = "IPVS_TELEMETRY_FROM_USER"
    )]
    pub user: Option<String>,
    /// File holding the basic-auth password (one line).
    #[arg(
        long = "from.password-file",
        value_name = "PATH",
        env = "IPVS_TELEMETRY_FROM_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// Print frames to standard output instead of the interactive view (like `top -b`).
    #[arg(long, env = "IPVS_TELEMETRY_BATCH",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub batch: bool,
    /// Frames to print before exiting; 0: until interrupted.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        env = "IPVS_TELEMETRY_ITERATIONS"
    )]
    pub iterations: u64,
    /// Pause between frames.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration,
          env = "IPVS_TELEMETRY_DELAY")]
    pub delay: Duration,
    /// Frame format of `--batch`: `text` or `json` (one document per line).
    #[arg(long, value_enum, default_value_t = crate::top::TopFormat::Text)]
    pub format: crate::top::TopFormat,
    /// Column to sort by: numbers largest first, `name` in order.
    #[arg(long, value_enum, default_value_t = crate::top::SortKey::Conns,
          env = "IPVS_TELEMETRY_SORT")]
    pub sort: crate::top::SortKey,
    /// Keep services whose namespace, id, names or destinations contain TEXT.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "",
        env = "IPVS_TELEMETRY_FILTER"
    )]
    pub filter: String,
    /// Read only this namespace (asks the daemon for it alone).
    #[arg(
        long = "filter.netns",
        value_name = "NAME",
        env = "IPVS_TELEMETRY_FILTER_NETNS"
    )]
    pub netns_filter: Option<String>,
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
          value_parser = parse_netns_arg, env = "IPVS_TELEMETRY_NETNS", value_delimiter = ',')]
    pub netns: Vec<NetnsArg>,
    /// Every entry of DIR is a namespace (rescanned every poll); repeatable.
    #[arg(
        long = "netns.discover",
        value_name = "DIR",
        env = "IPVS_TELEMETRY_NETNS_DISCOVER",
        value_delimiter = ','
    )]
    pub netns_discover: Vec<PathBuf>,
    /// Only namespaces whose name matches.
    #[arg(long = "netns.include", value_name = "REGEX", value_parser = parse_regex, env = "IPVS_TELEMETRY_NETNS_INCLUDE")]
    pub netns_include: Option<Regex>,
    /// Leave out namespaces whose name matches (wins over include).
    #[arg(long = "netns.exclude", value_name = "REGEX", value_parser = parse_regex, env = "IPVS_TELEMETRY_NETNS_EXCLUDE")]
    pub netns_exclude: Option<Regex>,
    /// Include the daemon's own namespace (`netns="host"`) [default: true]
    /// [env: IPVS_TELEMETRY_NETNS_HOST=]
    // The two environment variables are read by `resolve_env`, not by clap: clap reports a
    // flag of an overriding pair given on the command line and the other one from the
    // environment as a conflict, where the command line should simply win.
    #[arg(long = "netns.host", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_bool,
          overrides_with = "no_netns_host")]
    pub netns_host: Option<bool>,
    /// Leave out the daemon's own namespace [env: IPVS_TELEMETRY_NO_NETNS_HOST=]
    #[arg(long = "no-netns.host", overrides_with = "netns_host")]
    pub no_netns_host: bool,
    /// Interfaces included in the per-namespace interface series.
    #[arg(long = "netns.devices.include", value_name = "REGEX", value_parser = parse_regex,
          env = "IPVS_TELEMETRY_NETNS_DEVICES_INCLUDE")]
    pub devices_include: Option<Regex>,
    /// Interfaces left out of the per-namespace interface series.
    #[arg(long = "netns.devices.exclude", value_name = "REGEX", value_parser = parse_regex,
          default_value = "^lo$", env = "IPVS_TELEMETRY_NETNS_DEVICES_EXCLUDE")]
    pub devices_exclude: Regex,
    /// Never run `iptables-save`: fwmark services keep empty `protocol` and `virtual_port`.
    #[arg(long = "no-iptables-save", value_parser = clap::builder::BoolishValueParser::new(),
          env = "IPVS_TELEMETRY_NO_IPTABLES_SAVE")]
    pub no_iptables_save: bool,
    /// Log level.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info, env = "IPVS_TELEMETRY_LOG_LEVEL")]
    pub log_level: LogLevel,
    /// Log format.
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Logfmt, env = "IPVS_TELEMETRY_LOG_FORMAT")]
    pub log_format: LogFormat,
}

impl CommonOpts {
    /// Whether the daemon's own namespace is collected.
    pub fn include_host(&self) -> bool {
        !self.no_netns_host && self.netns_host.unwrap_or(true)
    }

    /// Applies `IPVS_TELEMETRY_NETNS_HOST` / `IPVS_TELEMETRY_NO_NETNS_HOST` (read through
    /// `var`) unless `--[no-]netns.host` is on the command line; `Err` is a one-line message.
    pub fn resolve_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if self.netns_host.is_some() || self.no_netns_host {
            return Ok(());
        }
        let read = |name: &str| {
            var(name)
                .map(|v| parse_bool(&v).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        let include = read("IPVS_TELEMETRY_NETNS_HOST")?;
        let exclude = read("IPVS_TELEMETRY_NO_NETNS_HOST")?;
        match (include, exclude) {
            (Some(a), Some(b)) if a == b => Err(format!(
                "IPVS_TELEMETRY_NETNS_HOST={a} and IPVS_TELEMETRY_NO_NETNS_HOST={b} contradict \
                 each other; set one"
            )),
            (Some(a), _) => {
                self.netns_host = Some(a);
                Ok(())
            }
            (None, Some(b)) => {
                self.netns_host = Some(!b);
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }
}

/// Parses a boolean in the usual forms: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`
/// (`y`/`n`, `t`/`f`), any case.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Ok(true),
        "0" | "false" | "f" | "no" | "n" | "off" => Ok(false),
        _ => Err(format!(
            "invalid boolean {s:?} (expected true/false, 1/0, yes/no or on/off)"
        )),
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
        env = "IPVS_TELEMETRY_WEB_LISTEN_ADDRESS",
        value_delimiter = ','
    )]
    pub listen_addresses: Vec<String>,
    /// Path of the metrics endpoint.
    #[arg(long = "web.telemetry-path", visible_alias = "telemetry-path", value_name = "PATH",
          default_value = "/metrics", value_parser = parse_http_path, env = "IPVS_TELEMETRY_WEB_TELEMETRY_PATH")]
    pub telemetry_path: String,
    /// TLS and basic-auth file in the exporter-toolkit web-config format.
    #[arg(
        long = "web.config.file",
        value_name = "FILE",
        env = "IPVS_TELEMETRY_WEB_CONFIG_FILE"
    )]
    pub web_config_file: Option<PathBuf>,
    /// Serve `/-/healthy` and `/-/ready` without basic auth (for probes that cannot log in).
    #[arg(long = "web.health-without-auth", value_parser = clap::builder::BoolishValueParser::new(),
          env = "IPVS_TELEMETRY_WEB_HEALTH_WITHOUT_AUTH")]
    pub health_without_auth: bool,
    /// Requests served at once; further ones get 503 (0: no limit).
    #[arg(
        long = "web.max-requests",
        value_name = "N",
        default_value_t = 40,
        env = "IPVS_TELEMETRY_WEB_MAX_REQUESTS"
    )]
    pub max_requests: usize,
    /// A scrape reuses the latest netlink collection when it began less than this long ago,
    /// and otherwise waits for a new one (collections follow scrapes; none run on a timer).
    #[arg(long = "collection.max-age", value_name = "DURATION", default_value = "1s",
          value_parser = parse_max_age, env = "IPVS_TELEMETRY_COLLECTION_MAX_AGE")]
    pub collection_max_age: Duration,
    /// Learn each steady scraper's interval and start a collection ahead of its next scrape,
    /// so that the scrape does not wait for it (`false`: every scrape past max-age waits).
    #[arg(long = "collection.ahead", value_name = "BOOL", default_value_t = true,
          action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new(),
          env = "IPVS_TELEMETRY_COLLECTION_AHEAD")]
    pub collection_ahead: bool,
    /// Deadline of one namespace's netlink collection (default: `--collection.max-age`
    /// between 10 s and 1 min); a namespace slower than this is reported as failed.
    #[arg(long = "collection.timeout", value_name = "DURATION",
          value_parser = parse_collection_timeout, env = "IPVS_TELEMETRY_COLLECTION_TIMEOUT")]
    pub collection_timeout: Option<Duration>,
    /// Deprecated: read as `--collection.max-age`.
    #[arg(long = "poll.interval", value_name = "DURATION", hide = true,
          value_parser = parse_max_age, env = "IPVS_TELEMETRY_POLL_INTERVAL")]
    pub poll_interval: Option<Duration>,
    /// eBPF probes: `auto` attaches if possible, `on` fails to start without them.
    #[arg(long = "ebpf", value_enum, default_value_t = EbpfMode::Auto, env = "IPVS_TELEMETRY_EBPF")]
    pub ebpf: EbpfMode,
    /// Window of the connection-rate histogram.
    #[arg(long = "ebpf.rate-window", value_name = "DURATION", default_value = "100ms",
          value_parser = parse_positive_duration, env = "IPVS_TELEMETRY_EBPF_RATE_WINDOW")]
    pub ebpf_rate_window: Duration,
    /// How long a NAT/local connection may wait for its first reply before it counts in
    /// `ipvs_ebpf_destination_waiting_connections`.
    #[arg(long = "ebpf.unanswered-after", value_name = "DURATION", default_value = "5s",
          value_parser = parse_positive_duration, global = true, env = "IPVS_TELEMETRY_EBPF_UNANSWERED_AFTER")]
    pub ebpf_unanswered_after: Duration,
    /// Label set of the eBPF histograms.
    #[arg(long = "ebpf.granularity", value_enum, default_value_t = Granularity::Destination,
          env = "IPVS_TELEMETRY_EBPF_GRANULARITY")]
    pub ebpf_granularity: Granularity,
    /// Most destinations tracked by the eBPF consumer; more are counted as overflow.
    #[arg(
        long = "ebpf.max-destinations",
        value_name = "N",
        default_value_t = 100_000,
        env = "IPVS_TELEMETRY_EBPF_MAX_DESTINATIONS"
    )]
    pub ebpf_max_destinations: usize,
    /// Names for services and destinations (YAML, docs/names.md); reloaded on SIGHUP and when
    /// it changes.
    #[arg(
        long = "names.file",
        value_name = "FILE",
        env = "IPVS_TELEMETRY_NAMES_FILE"
    )]
    pub names_file: Option<PathBuf>,
    /// Docker Engine API socket for Swarm names (`unix://PATH`; empty: no Docker names).
    #[arg(long = "docker.host", value_name = "URL", default_value = "unix:///var/run/docker.sock",
          value_parser = parse_docker_host, env = "IPVS_TELEMETRY_DOCKER_HOST")]
    pub docker_host: DockerHost,
    /// Period of the Docker names refresh (they are also refreshed when the fwmark services or
    /// their real servers change).
    #[arg(long = "docker.refresh-interval", value_name = "DURATION", default_value = "30s",
          value_parser = parse_positive_duration,
          env = "IPVS_TELEMETRY_DOCKER_REFRESH_INTERVAL")]
    pub docker_refresh_interval: Duration,
}

/// `--docker.host`: the Engine API's unix socket, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerHost {
    /// No Docker names.
    Off,
    /// The socket's path.
    Unix(PathBuf),
}

fn parse_docker_host(s: &str) -> Result<DockerHost, String> {
    if s.is_empty() {
        return Ok(DockerHost::Off);
    }
    match s.strip_prefix("unix://") {
        Some(p) if p.starts_with('/') => Ok(DockerHost::Unix(PathBuf::from(p))),
        _ => Err(format!(
            "{s:?} is not a local socket (expected unix:///PATH, e.g. unix:///var/run/docker.sock, or \"\" for none)"
        )),
    }
}

impl ServeOpts {
    /// `--collection.max-age`, or the deprecated `--poll.interval` when given.
    pub fn max_age(&self) -> Duration {
        self.poll_interval.unwrap_or(self.collection_max_age)
    }
}

/// The longest `--collection.max-age`.
pub const MAX_AGE_LIMIT: Duration = Duration::from_secs(3600);

/// The longest `--collection.timeout`.
pub const COLLECTION_TIMEOUT_LIMIT: Duration = Duration::from_secs(600);

fn parse_collection_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_positive_duration(s)?;
    if d > COLLECTION_TIMEOUT_LIMIT {
        return Err(format!("{s:?} is longer than the limit of 10m"));
    }
    Ok(d)
}

fn parse_max_age(s: &str) -> Result<Duration, String> {
    let d = parse_positive_duration(s)?;
    if d > MAX_AGE_LIMIT {
        return Err(format!("{s:?} is longer than the limit of 1h"));
    }
    Ok(d)
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
        assert_eq!(cli.serve.max_age(), Duration::from_secs(1));
        assert!(cli.common.include_host());
        let o = cli.metrics.export_options().unwrap();
        assert_eq!(o, crate::metrics::ExportOptions::default());
        let Command::Serve(cmd) = Cli::try_parse_from([
            "ipvs-telemetry",
            "--poll.interval",
            "15s",
            "--metrics.estimator",
            "--metrics.exclude",
            "destination.info,context.conntrack",
            "--metrics.destinations",
            "vip=10.0.0.0/8,port=80",
            "--metrics.destinations",
            "fwmark=256",
            "--metrics.max-series",
            "0",
        ])
        .unwrap()
        .into_command() else {
            panic!("not serve")
        };
        assert_eq!(cmd.serve.max_age(), Duration::from_secs(15));
        let o = cmd.metrics.export_options().unwrap();
        assert!(o.estimator);
        assert_eq!(o.excluded.len(), 2);
        assert_eq!(o.max_series, 0);
        assert!(
            matches!(o.destinations, crate::metrics::options::Destinations::Selected(ref v) if v.len() == 2)
        );
        let Command::Snapshot(cmd) = Cli::try_parse_from([
            "ipvs-telemetry",
            "snapshot",
            "--format",
            "prometheus",
            "--metrics.destinations",
            "none",
        ])
        .unwrap()
        .into_command() else {
            panic!("not snapshot")
        };
        assert_eq!(
            cmd.metrics.export_options().unwrap().destinations,
            crate::metrics::options::Destinations::None
        );
        for bad in [
            &["--collection.max-age", "2h"][..],
            &["--collection.max-age", "0s"],
            &["--metrics.exclude", "thresholds"],
            &["--metrics.destinations", "vip=300.0.0.1"],
            &["--metrics.max-series", "-1"],
        ] {
            let r =
                Cli::try_parse_from(std::iter::once("ipvs-telemetry").chain(bad.iter().copied()));
            assert!(r.is_err(), "{bad:?}");
        }
        let Command::Serve(cmd) = Cli::try_parse_from([
            "ipvs-telemetry",
            "serve",
            "--listen-address",
            ":1",
            "--namespace-path",
            "/var/run/docker/netns/ingress_sbox",
            "--no-netns.host",
        ])
        .unwrap()
        .into_command() else {
            panic!("not serve")
        };
        assert_eq!(cmd.serve.listen_addresses, vec![":1"]);
        assert_eq!(cmd.common.netns.len(), 1);
        assert!(!cmd.common.include_host());
        let cli = Cli::try_parse_from(["ipvs-telemetry", "snapshot", "--format", "json"]).unwrap();
        assert!(matches!(
            cli.into_command(),
            Command::Snapshot(SnapshotCommand {
                snapshot: SnapshotOpts {
                    format: SnapshotFormat::Json,
                    ..
                },
                ..
            })
        ));
        assert!(Cli::try_parse_from(["ipvs-telemetry", "--bogus"]).is_err());
        let cli = Cli::try_parse_from(["ipvs-telemetry"]).unwrap();
        assert_eq!(
            cli.serve.docker_host,
            DockerHost::Unix("/var/run/docker.sock".into())
        );
        let cli = Cli::try_parse_from(["ipvs-telemetry", "--docker.host", ""]).unwrap();
        assert_eq!(cli.serve.docker_host, DockerHost::Off);
        assert!(
            Cli::try_parse_from(["ipvs-telemetry", "--docker.host", "tcp://10.0.0.1:2375"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["ipvs-telemetry", "--netns.include", "("]).is_err());
    }

    /// The daemon's flags without a command are `serve`; each command takes only its own flags.
    #[test]
    fn each_command_takes_its_own_flags() {
        let Command::Serve(cmd) = Cli::try_parse_from(["ipvs-telemetry", "--poll.interval", "5s"])
            .unwrap()
            .into_command()
        else {
            panic!("not serve")
        };
        assert_eq!(cmd.serve.max_age(), Duration::from_secs(5));
        for bad in [
            &["snapshot", "--ebpf", "on"][..],
            &["snapshot", "--poll.interval", "5s"],
            &["snapshot", "--collection.max-age", "5s"],
            &["snapshot", "--web.listen-address", ":1"],
            &["--ebpf", "on", "snapshot"],
            &["--log.level", "debug", "snapshot"],
            &["serve", "--format", "json"],
        ] {
            let argv = std::iter::once("ipvs-telemetry").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?} accepted");
        }
        let cli = Cli::try_parse_from(["ipvs-telemetry", "snapshot", "--log.level", "debug"]);
        let Command::Snapshot(cmd) = cli.unwrap().into_command() else {
            panic!("not snapshot")
        };
        assert_eq!(cmd.common.log_level, LogLevel::Debug);
    }

    /// `--netns.host[=BOOL]` and `--no-netns.host`: the last one given wins.
    #[test]
    fn netns_host_flags() {
        let host = |args: &[&str]| {
            let argv = std::iter::once("ipvs-telemetry").chain(args.iter().copied());
            Cli::try_parse_from(argv).unwrap().common.include_host()
        };
        assert!(host(&[]));
        assert!(host(&["--netns.host"]));
        assert!(!host(&["--netns.host=false"]));
        assert!(!host(&["--netns.host=0"]));
        assert!(host(&["--netns.host=yes"]));
        assert!(!host(&["--no-netns.host"]));
        assert!(!host(&["--netns.host", "--no-netns.host"]));
        assert!(host(&["--no-netns.host", "--netns.host"]));
        assert!(Cli::try_parse_from(["ipvs-telemetry", "--netns.host=maybe"]).is_err());
    }

    /// The environment variables of `--[no-]netns.host` take the usual boolean forms, and a
    /// flag on the command line wins over them.
    #[test]
    fn netns_host_environment() {
        let host = |args: &[&str], env: &[(&str, &str)]| {
            let argv = std::iter::once("ipvs-telemetry").chain(args.iter().copied());
            let mut common = Cli::try_parse_from(argv).unwrap().common;
            let var = |name: &str| {
                env.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            };
            common.resolve_env(var).map(|_| common.include_host())
        };
        for (value, included) in [("1", false), ("true", false), ("YES", false), ("on", false)] {
            assert_eq!(
                host(&[], &[("IPVS_TELEMETRY_NO_NETNS_HOST", value)]),
                Ok(included)
            );
            assert_eq!(
                host(&[], &[("IPVS_TELEMETRY_NETNS_HOST", value)]),
                Ok(!included)
            );
        }
        for value in ["0", "false", "no", "off"] {
            assert_eq!(
                host(&[], &[("IPVS_TELEMETRY_NO_NETNS_HOST", value)]),
                Ok(true)
            );
            assert_eq!(
                host(&[], &[("IPVS_TELEMETRY_NETNS_HOST", value)]),
                Ok(false)
            );
        }
        let no = [("IPVS_TELEMETRY_NO_NETNS_HOST", "1")];
        assert_eq!(host(&["--netns.host"], &no), Ok(true));
        assert_eq!(
            host(&["--no-netns.host"], &[("IPVS_TELEMETRY_NETNS_HOST", "1")]),
            Ok(false)
        );
        assert!(host(&[], &[("IPVS_TELEMETRY_NETNS_HOST", "maybe")]).is_err());
        assert!(
            host(
                &[],
                &[
                    ("IPVS_TELEMETRY_NETNS_HOST", "1"),
                    ("IPVS_TELEMETRY_NO_NETNS_HOST", "1")
                ]
            )
            .is_err()
        );
    }
}
