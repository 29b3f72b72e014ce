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
    }
    .with_filter(tracing_subscriber::filter::LevelFilter::from_level(max))
    // Dependencies (hyper, rustls) log at debug about every connection; keep ours only below
    // info.
    .with_filter(tracing_subscriber::filter::filter_fn(|m| {
        m.target().starts_with("ipvs_telemetry") || *m.level() <= Level::INFO
    }));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

struct LineLayer {
    format: LogFormat,
}

#[derive(Default)]
struct Fields {
    msg: String,
    kv: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.kv.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.msg = format!("{value:?}");
        } else {
            self.kv.push((field.name(), format!("{value:?}")));
        }
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
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
            LogFormat::Json => {
                let mut m = serde_json::Map::new();
                m.insert("ts".into(), ts.into());
                m.insert("level".into(), level.into());
                m.insert("msg".into(), f.msg.into());
                for (k, v) in f.kv {
                    m.insert(k.into(), v.into());
                }
                serde_json::Value::Object(m).to_string()
            }
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
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
