//! `ipvs-telemetry snapshot`: one collection of every selected namespace, printed.
//!
//! The formats: `table` ([`crate::ipvsadm_table`]: the layout of `ipvsadm -Ln --stats
//! --exact`), `json` (the versioned snapshot document of `docs/api.schema.json`, see
//! [`crate::api::schema`]) and `prometheus` (the daemon's 0.0.4 text of the netlink series: no
//! eBPF, error-counter or process series, there is no daemon).

use std::io::Write as _;
use std::time::Duration;

use crate::cli::{SnapshotCommand, SnapshotFormat};
use crate::error::Error;
use crate::ipvsadm_table::render_table;
use crate::logging::print_error;
use crate::metrics::Format;
use crate::model::Snapshot;

/// Deadline of one namespace's collection. Generous: a one-shot command should finish even for
/// 10,000s of services on a slow machine, and still never hang on a stuck socket.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the snapshot command. `Ok(false)` when a namespace could not be read (each printed on
/// stderr) or stdout was closed; `Err` when the command could not run (`main.rs` prints it and
/// picks the exit status).
pub fn run(cli: &SnapshotCommand) -> Result<bool, Error> {
    crate::logging::init(&cli.common);
    let format = cli.common.log_format;
    let opts = &cli.snapshot;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let mut collector = crate::netns::Collector::new(&cli.common, REQUEST_TIMEOUT)?;
    let export = cli.metrics.export_options().map_err(Error::Flags)?;
    let mut all_read = true;
    for i in 0..opts.repeat.max(1) {
        if i > 0 {
            std::thread::sleep(opts.interval);
        }
        let snapshot = runtime.block_on(collector.collect());
        if opts.format == SnapshotFormat::Prometheus {
            // Streamed: a large table's exposition is never held whole.
            let inputs = crate::metrics::snapshot_inputs(snapshot.clone());
            let mut out = IoWrite(std::io::BufWriter::with_capacity(
                64 * 1024,
                std::io::stdout().lock(),
            ));
            let written = crate::metrics::encode_to(&inputs, &export, Format::Text, &mut out)
                .ok()
                .and_then(|_| out.0.flush().ok());
            if written.is_none() {
                return Ok(false); // stdout closed (e.g. `| head`): nothing more to say
            }
            all_read = every_namespace_read(format, &snapshot);
            continue;
        }
        let text = match opts.format {
            SnapshotFormat::Table => render_table(&snapshot),
            SnapshotFormat::Json if opts.repeat > 1 => {
                // One line per collection, so a reader can follow a loop.
                serde_json::to_string(&crate::api::schema::snapshot(&snapshot, None, None))
                    .map(|s| s + "\n")
                    .unwrap_or_default()
            }
            SnapshotFormat::Json => {
                serde_json::to_string_pretty(&crate::api::schema::snapshot(&snapshot, None, None))
                    .map(|s| s + "\n")
                    .unwrap_or_default()
            }
            SnapshotFormat::Prometheus => String::new(),
        };
        let mut out = std::io::stdout().lock();
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return Ok(false); // stdout closed (e.g. `| head`): nothing more to say
        }
        all_read = every_namespace_read(format, &snapshot);
    }
    Ok(all_read)
}

/// Prints each namespace that could not be read; `false` when there was one.
fn every_namespace_read(format: crate::cli::LogFormat, snapshot: &Snapshot) -> bool {
    let mut all = true;
    for ns in &snapshot.namespaces {
        if let Err(f) = &ns.ipvs {
            print_error(format, &format!("netns {:?}: {}", ns.netns.name, f.message));
            all = false;
        }
    }
    all
}

/// `fmt::Write` over an `io::Write`.
struct IoWrite<W>(W);

impl<W: std::io::Write> std::fmt::Write for IoWrite<W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|_| std::fmt::Error)
    }
}
