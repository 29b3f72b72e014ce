//! The Prometheus text format 0.0.4 (prometheus-client only writes OpenMetrics).
//!
//! Differences from OpenMetrics handled here: a counter's HELP/TYPE lines name the sample
//! (`foo_total`), there is no `# EOF`, HELP escapes only `\` and newline, numbers use Go's
//! forms (`+Inf`, `NaN`).

use std::fmt::{self, Write};

use super::families::{Kind, LabelSet, Num, Samples, Sink, walk_head, walk_tail};
use super::labels::LabelPairs;
use super::{Inputs, Plans};
use crate::model::HistogramSnapshot;

/// Writes the 0.0.4 namespace families of `inputs` into `out`.
pub(super) fn encode_head(inputs: &Inputs, out: &mut dyn Write) -> fmt::Result {
    walk_head(inputs, &mut TextSink { out })
}

/// Writes the 0.0.4 context, eBPF and daemon families of `inputs` into `out`.
pub(super) fn encode_tail(inputs: &Inputs, plans: &Plans, out: &mut dyn Write) -> fmt::Result {
    walk_tail(inputs, plans, &mut TextSink { out })
}

/// Writes the service and destination families the straightforward way (test reference).
#[cfg(test)]
pub(super) fn encode_reference(inputs: &Inputs, out: &mut dyn Write) -> fmt::Result {
    super::families::walk_reference(inputs, &mut TextSink { out })
}

struct TextSink<'a> {
    out: &'a mut dyn Write,
}

/// The samples of one family being written.
pub(super) struct TextFamily<'a> {
    out: &'a mut dyn Write,
    name: &'static str,
}

impl Sink for TextSink<'_> {
    type Family<'s>
        = TextFamily<'s>
    where
        Self: 's;

    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
    ) -> Result<TextFamily<'_>, fmt::Error> {
        let (suffix, t) = match kind {
            Kind::Counter => ("_total", "counter"),
            Kind::Gauge => ("", "gauge"),
            Kind::Histogram => ("", "histogram"),
        };
        let out = &mut *self.out;
        out.write_str("# HELP ")?;
        out.write_str(name)?;
        out.write_str(suffix)?;
        out.write_char(' ')?;
        write_escaped(out, help, false)?;
        out.write_str("\n# TYPE ")?;
        out.write_str(name)?;
        out.write_str(suffix)?;
        out.write_char(' ')?;
        out.write_str(t)?;
        out.write_char('\n')?;
        Ok(TextFamily { out, name })
    }
}

/// Escapes `\` and newline (HELP), and `"` too in label values.
pub(super) fn write_escaped(out: &mut dyn Write, s: &str, quote: bool) -> fmt::Result {
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'"' if quote => "\\\"",
            _ => continue,
        };
        out.write_str(&s[last..i])?;
        out.write_str(esc)?;
        last = i + 1;
    }
    out.write_str(&s[last..])
}

/// Writes `{a="x",b="y"` (without the closing brace); returns whether anything was written.
pub(super) fn write_labels(
    out: &mut dyn Write,
    labels: &dyn LabelPairs,
) -> Result<bool, fmt::Error> {
    let mut first = true;
    labels.pairs(&mut |k, v| {
        out.write_char(if first { '{' } else { ',' })?;
        first = false;
        out.write_str(k)?;
        out.write_str("=\"")?;
        write_escaped(out, v, true)?;
        out.write_char('"')
    })?;
    Ok(!first)
}

/// Formats a float the way Go's strconv does for Prometheus (`+Inf`, `-Inf`, `NaN`).
pub(super) fn format_f64(v: f64, out: &mut dyn Write) -> fmt::Result {
    if v.is_nan() {
        out.write_str("NaN")
    } else if v == f64::INFINITY {
        out.write_str("+Inf")
    } else if v == f64::NEG_INFINITY {
        out.write_str("-Inf")
    } else {
        write!(out, "{v}")
    }
}

pub(super) fn write_num(out: &mut dyn Write, v: Num) -> fmt::Result {
    match v {
        Num::U(v) => out.write_str(itoa_u64(v, &mut [0; 20])),
        Num::I(v) if v < 0 => {
            out.write_char('-')?;
            out.write_str(itoa_u64(v.unsigned_abs(), &mut [0; 20]))
        }
        Num::I(v) => out.write_str(itoa_u64(v as u64, &mut [0; 20])),
        Num::F(v) => format_f64(v, out),
    }
}

/// Decimal digits of `v` in `buf`, without allocating.
fn itoa_u64(mut v: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

impl TextFamily<'_> {
    fn sample(&mut self, suffix: &str, labels: &dyn LabelPairs, v: Num) -> fmt::Result {
        self.out.write_str(self.name)?;
        self.out.write_str(suffix)?;
        if write_labels(self.out, labels)? {
            self.out.write_char('}')?;
        }
        self.out.write_char(' ')?;
        write_num(self.out, v)?;
        self.out.write_char('\n')
    }

    fn bucket(&mut self, labels: &dyn LabelPairs, le: f64, cum: u64) -> fmt::Result {
        self.out.write_str(self.name)?;
        self.out.write_str("_bucket")?;
        let out = &mut *self.out;
        let sep = if write_labels(out, labels)? {
            ",le=\""
        } else {
            "{le=\""
        };
        out.write_str(sep)?;
        format_f64(le, out)?;
        out.write_str("\"} ")?;
        write_num(out, Num::U(cum))?;
        out.write_char('\n')
    }
}

impl Samples for TextFamily<'_> {
    fn counter<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result {
        self.sample("_total", labels, v)
    }

    fn gauge<L: LabelSet>(&mut self, labels: &L, v: Num) -> fmt::Result {
        self.sample("", labels, v)
    }

    fn histogram<L: LabelSet>(&mut self, labels: &L, h: &HistogramSnapshot) -> fmt::Result {
        let mut cum_max = 0;
        for &(le, cum) in &h.buckets {
            // Cumulative counts never decrease, whatever the producer handed over.
            cum_max = cum_max.max(cum.min(h.count));
            self.bucket(labels, le, cum_max)?;
        }
        self.bucket(labels, f64::INFINITY, h.count)?;
        self.sample("_sum", labels, Num::F(h.sum))?;
        self.sample("_count", labels, Num::U(h.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut s = String::new();
        for v in [
            Num::U(0),
            Num::U(u64::MAX),
            Num::I(-5),
            Num::I(i64::MIN),
            Num::F(0.25),
            Num::F(f64::INFINITY),
            Num::F(f64::NAN),
            Num::F(1.0),
        ] {
            write_num(&mut s, v).unwrap();
            s.push(' ');
        }
        assert_eq!(
            s,
            "0 18446744073709551615 -5 -9223372036854775808 0.25 +Inf NaN 1 "
        );
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        write_escaped(&mut s, "a\\b\"c\nd", true).unwrap();
        assert_eq!(s, r#"a\\b\"c\nd"#);
        s.clear();
        write_escaped(&mut s, "a\\b\"c\nd", false).unwrap();
        assert_eq!(s, r#"a\\b"c\nd"#);
    }
}
