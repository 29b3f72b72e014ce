//! Content negotiation: `Accept` picks the protobuf exposition, OpenMetrics or the 0.0.4 text
//! format, `Accept-Encoding` picks gzip. Quality values (`q=`) are honoured; anything unparsable counts as absent.

use crate::metrics::Format;

/// Media ranges of an `Accept`-like header: `(type, params, q)`.
fn ranges(header: &str) -> impl Iterator<Item = (String, Vec<(String, String)>, f32)> + '_ {
    header.split(',').filter_map(|part| {
        let mut it = part.split(';');
        let media = it.next()?.trim().to_ascii_lowercase();
        if media.is_empty() {
            return None;
        }
        let mut q = 1.0f32;
        let mut params = Vec::new();
        for p in it {
            let (k, v) = p.split_once('=')?;
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().trim_matches('"').to_string();
            if k == "q" {
                q = v.parse().ok().filter(|q: &f32| (0.0..=1.0).contains(q))?;
            } else {
                params.push((k, v));
            }
        }
        Some((media, params, q))
    })
}

/// The format for an `Accept` header: the protobuf exposition when the client names it
/// (`application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily;
/// encoding=delimited`, as Prometheus does when it ingests native histograms) and ranks it at
/// least as high as the others, else OpenMetrics when the client ranks it at least as high as
/// the text format, the text format otherwise (also without a header, or when nothing we
/// write is acceptable — like the Go client, we then still answer in the text format). A
/// wildcard never selects the binary format.
pub fn format(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let (mut proto, mut om, mut text) = (0.0f32, 0.0f32, 0.0f32);
    for (media, params, q) in ranges(accept) {
        let version = params
            .iter()
            .find(|(k, _)| k == "version")
            .map(|(_, v)| v.as_str());
        match media.as_str() {
            "application/openmetrics-text" => {
                if matches!(version, None | Some("1.0.0") | Some("0.0.1")) {
                    om = om.max(q);
                }
            }
            "text/plain" => {
                if matches!(version, None | Some("0.0.4")) {
                    text = text.max(q);
                }
            }
            "application/vnd.google.protobuf" => {
                let param = |name| {
                    params
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                };
                if param("proto") == Some("io.prometheus.client.MetricFamily")
                    && param("encoding") == Some("delimited")
                {
                    proto = proto.max(q);
                }
            }
            "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if proto > 0.0 && proto >= om && proto >= text {
        Format::Protobuf
    } else if om > 0.0 && om >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Whether an `Accept-Encoding` header allows gzip.
pub fn gzip(accept_encoding: Option<&str>) -> bool {
    let Some(h) = accept_encoding else {
        return false;
    };
    let (mut gzip, mut star) = (None, None);
    for (coding, _, q) in ranges(h) {
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(gzip.unwrap_or(0.0f32).max(q)),
            "*" => star = Some(q),
            _ => {}
        }
    }
    match (gzip, star) {
        (Some(q), _) => q > 0.0,
        (None, Some(q)) => q > 0.0,
        (None, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_accept_headers() {
        // Prometheus 2.42.
        assert_eq!(
            format(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        // Prometheus with scrape_protocols preferring the text format.
        assert_eq!(
            format(Some(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5"
            )),
            Format::Text
        );
        assert_eq!(format(None), Format::Text);
        assert_eq!(format(Some("*/*")), Format::Text);
        assert_eq!(format(Some("application/json")), Format::Text);
        assert_eq!(
            format(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            format(Some("Application/OpenMetrics-Text; Version=\"1.0.0\"")),
            Format::OpenMetrics
        );
        assert_eq!(
            format(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
        assert_eq!(
            format(Some("application/openmetrics-text;version=2.0.0")),
            Format::Text
        );
        assert_eq!(
            format(Some("application/openmetrics-text;q=bogus, text/plain")),
            Format::Text
        );
    }

    #[test]
    fn protobuf_when_named() {
        // Prometheus 2.42 with --enable-feature=native-histograms.
        assert_eq!(
            format(Some(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::Protobuf
        );
        // Prometheus 3 with scrape_native_histograms: true.
        assert_eq!(
            format(Some(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            )),
            Format::Protobuf
        );
        // Ranked below OpenMetrics, another encoding, another message, or no parameters.
        assert_eq!(
            format(Some(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,application/openmetrics-text;version=1.0.0"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            format(Some(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
            )),
            Format::Text
        );
        assert_eq!(
            format(Some(
                "application/vnd.google.protobuf;proto=io.prometheus.client.Other;encoding=delimited"
            )),
            Format::Text
        );
        assert_eq!(
            format(Some("application/vnd.google.protobuf")),
            Format::Text
        );
        assert_eq!(
            format(Some(
                "Application/Vnd.Google.Protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; q=0"
            )),
            Format::Text
        );
    }

    #[test]
    fn encodings() {
        assert!(gzip(Some("gzip")));
        assert!(gzip(Some("deflate, gzip;q=1.0, *;q=0.5")));
        assert!(gzip(Some("*")));
        assert!(!gzip(Some("gzip;q=0")));
        assert!(!gzip(Some("gzip;q=0, *")));
        assert!(!gzip(Some("identity")));
        assert!(!gzip(Some("br")));
        assert!(!gzip(None));
    }
}
