//! Logging setup: `--log.level` and `--log.format logfmt|json`, on stderr.
//!
//! logfmt lines look like Prometheus' own: `ts=2026-11-21T05:43:16.123Z level=info
//! msg="listening" address=[::]:10054`; JSON lines carry the same keys.

use std::fmt::Write as _;
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::cli::{CommonOpts, LogFormat, LogLevel};

/// Installs the global subscriber; a second call does nothing.
pub fn init(opts: &CommonOpts) {
    let max = match opts.log_level {
        LogLevel::Error => Level::ERROR,
        LogLevel::Warn => Level::WARN,
        LogLevel::Info => Level::INFO,
        LogLevel::Debug => Level::DEBUG,
    };
    let layer = LineLayer {
        format: opts.log_format,
        write: |line: &str| {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        },
    }
    .with_filter(tracing_subscriber::filter::LevelFilter::from_level(max))
    // Dependencies (hyper, rustls) log at debug about every connection; keep ours only below
    // info.
    .with_filter(tracing_subscriber::filter::filter_fn(|m| {
        m.target().starts_with("ipvs_telemetry") || *m.level() <= Level::INFO
    }));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Prints an error that ends the command (or, for `snapshot`, a namespace it could not read)
/// on stderr without the subscriber, which may not be set up yet: `ipvs-telemetry: MSG` under
/// logfmt, the log line's JSON object (`level` `error`) under `--log.format json`, so that a
/// log pipeline parsing JSON also gets the reason the daemon did not start.
pub fn print_error(format: LogFormat, msg: &str) {
    let line = match format {
        LogFormat::Logfmt => format!("ipvs-telemetry: {msg}"),
        LogFormat::Json => json_line(&rfc3339_now(), "error", msg, Vec::new()),
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The `--log.format` asked for by a command line that could not be parsed, so that its
/// error is printed in that format: the last `--log.format json|logfmt` (or `=`) in `args`,
/// else `IPVS_TELEMETRY_LOG_FORMAT` (`env`), else logfmt.
pub fn format_of_args(args: &[String], env: Option<&str>) -> LogFormat {
    let mut found = None;
    for (i, a) in args.iter().enumerate() {
        let value = match a.strip_prefix("--log.format") {
            Some(rest) if rest.starts_with('=') => Some(&rest[1..]),
            Some("") => args.get(i + 1).map(String::as_str),
            _ => None,
        };
        match value {
            Some("json") => found = Some(LogFormat::Json),
            Some("logfmt") => found = Some(LogFormat::Logfmt),
            _ => {}
        }
    }
    found
        .or_else(|| (env == Some("json")).then_some(LogFormat::Json))
        .unwrap_or(LogFormat::Logfmt)
}

fn json_line(ts: &str, level: &str, msg: &str, kv: Vec<(&'static str, String)>) -> String {
    let mut m = serde_json::Map::new();
    m.insert("ts".into(), ts.into());
    m.insert("level".into(), level.into());
    m.insert("msg".into(), msg.into());
    for (k, v) in kv {
        m.insert(k.into(), v.into());
    }
    serde_json::Value::Object(m).to_string()
}

struct LineLayer<W> {
    format: LogFormat,
    /// Where each finished line goes (stderr; a buffer in tests).
    write: W,
}

#[derive(Default)]
struct Fields {
    msg: String,
    kv: Vec<(&'static str, String)>,
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            // A field named `msg` would be a second `msg` key: it is the message when there is
            // none, else it is kept under another name.
            "message" => self.msg = value,
            "msg" if self.msg.is_empty() => self.msg = value,
            "msg" => self.kv.push(("msg_field", value)),
            name => self.kv.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl<S: Subscriber, W: Fn(&str) + Send + Sync + 'static> Layer<S> for LineLayer<W> {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let ts = rfc3339_now();
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        let line = match self.format {
            LogFormat::Logfmt => {
                let mut l = format!("ts={ts} level={level} msg={}", logfmt_value(&f.msg));
                for (k, v) in &f.kv {
                    let _ = write!(l, " {k}={}", logfmt_value(v));
                }
                l
            }
            LogFormat::Json => json_line(&ts, &level, &f.msg, f.kv),
        };
        (self.write)(&line);
    }
}

/// Quotes a logfmt value when it is empty or holds spaces, quotes, `=` or control characters.
fn logfmt_value(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if plain {
        v.to_string()
    } else {
        let mut s = String::with_capacity(v.len() + 2);
        s.push('"');
        for c in v.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                '\t' => s.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(s, "\\u{{{:x}}}", c as u32);
                }
                c => s.push(c),
            }
        }
        s.push('"');
        s
    }
}

/// Now as `2026-11-21T05:43:16.123Z`.
fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_millis())
}

fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_239_796, 123), "2026-11-21T05:43:16.123Z");
    }

    /// Lines of the events logged by `f`, in `format`.
    fn lines(format: LogFormat, f: impl FnOnce()) -> Vec<String> {
        use std::sync::{Arc, Mutex};
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let layer = LineLayer {
            format,
            write: move |l: &str| sink.lock().unwrap().push(l.to_string()),
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        out.lock().unwrap().clone()
    }

    #[test]
    fn one_msg_key_per_line() {
        let logfmt = lines(LogFormat::Logfmt, || {
            tracing::info!(msg = "only a field");
            tracing::info!(msg = "a field", "a message");
            tracing::info!(error = "e", "plain");
        });
        let strip = |l: &String| l.split_once(' ').unwrap().1.to_string();
        let got: Vec<String> = logfmt.iter().map(strip).collect();
        assert_eq!(
            got,
            [
                "level=info msg=\"only a field\"",
                "level=info msg=\"a message\" msg_field=\"a field\"",
                "level=info msg=plain error=e",
            ]
        );
        let json = lines(LogFormat::Json, || tracing::warn!(msg = "x", "y"));
        let v: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
        assert_eq!((&v["msg"], &v["msg_field"]), (&"y".into(), &"x".into()));
    }

    #[test]
    fn format_of_unparsed_args() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let f = |a: &[&str], env| format_of_args(&args(a), env);
        assert_eq!(f(&["x", "--log.format", "json"], None), LogFormat::Json);
        assert_eq!(
            f(&["x", "--log.format=json", "--bogus"], None),
            LogFormat::Json
        );
        assert_eq!(f(&["x", "--bogus"], Some("json")), LogFormat::Json);
        assert_eq!(
            f(&["x", "--log.format=logfmt"], Some("json")),
            LogFormat::Logfmt
        );
        assert_eq!(f(&["x", "--log.format"], None), LogFormat::Logfmt);
        assert_eq!(f(&["x"], None), LogFormat::Logfmt);
    }

    #[test]
    fn logfmt_quoting() {
        assert_eq!(logfmt_value("abc"), "abc");
        assert_eq!(logfmt_value("[::]:10054"), "[::]:10054");
        assert_eq!(logfmt_value(""), "\"\"");
        assert_eq!(logfmt_value("a b"), "\"a b\"");
        assert_eq!(logfmt_value("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
        assert_eq!(logfmt_value("k=v"), "\"k=v\"");
    }
}
