//! Which text format a scrape gets, as the Prometheus client libraries decide it: the
//! OpenMetrics text when the `Accept` header asks for it, otherwise the Prometheus text
//! format 0.0.4 (what `curl`, older agents and `promtool check metrics` read).
//!
//! [`super::render`] writes OpenMetrics; [`to_text_004`] rewrites that into 0.0.4.

/// A text exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    Text004,
}

impl Format {
    /// The format for a request with this `Accept` header (none: 0.0.4). Media ranges
    /// are taken by quality, highest first (the header's order among equals); the first
    /// that names one of the two formats wins, and `*/*` or none named means 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text004;
        };
        let mut ranges: Vec<(f32, String)> = accept
            .split(',')
            .filter_map(|range| {
                let mut parts = range.split(';');
                let media = parts.next()?.trim().to_ascii_lowercase();
                let q = parts
                    .filter_map(|p| p.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                    .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())?;
                (q > 0.0).then_some((q, media))
            })
            .collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, media) in ranges {
            match media.as_str() {
                "application/openmetrics-text" => return Format::OpenMetrics,
                "text/plain" | "text/*" | "*/*" => return Format::Text004,
                _ => {}
            }
        }
        Format::Text004
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// A metric family of an OpenMetrics text.
#[derive(Default)]
struct Family<'a> {
    name: &'a str,
    kind: &'a str,
    help: Option<&'a str>,
    samples: Vec<&'a str>,
}

/// `openmetrics` (as [`super::render`] writes it: no exemplars, no timestamps)
/// rewritten in the Prometheus text format 0.0.4: a counter's `# HELP`/`# TYPE` name its
/// `_total` sample, `info` becomes a gauge, `# UNIT`, `_created` samples and `# EOF` go.
pub fn to_text_004(openmetrics: &str) -> String {
    /// The family `name`: the last one, or a new one after it.
    fn family<'a, 'f>(families: &'f mut Vec<Family<'a>>, name: &'a str) -> &'f mut Family<'a> {
        if families.last().is_none_or(|f| f.name != name) {
            families.push(Family {
                name,
                ..Family::default()
            });
        }
        let last = families.len() - 1;
        &mut families[last]
    }
    let mut families: Vec<Family<'_>> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            family(&mut families, name).help = Some(help);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            family(&mut families, name).kind = kind;
        } else if line.starts_with('#') || line.is_empty() {
            // # UNIT, # EOF
        } else if let Some(f) = families.last_mut() {
            f.samples.push(line);
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for f in &families {
        let (name, kind) = match f.kind {
            "counter" => (format!("{}_total", f.name), "counter"),
            "info" => (format!("{}_info", f.name), "gauge"),
            "gauge" | "histogram" | "summary" => (f.name.to_string(), f.kind),
            _ => (f.name.to_string(), "untyped"),
        };
        if let Some(help) = f.help {
            // 0.0.4 escapes only the backslash and the newline in help texts.
            let help = help.replace("\\\"", "\"");
            out.push_str(&format!("# HELP {name} {help}\n"));
        }
        out.push_str(&format!("# TYPE {name} {kind}\n"));
        let created = format!("{}_created", f.name);
        for s in &f.samples {
            let sample_name = s.split(['{', ' ']).next().unwrap_or("");
            if sample_name != created {
                out.push_str(s);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (None, Format::Text004),
            (Some("*/*"), Format::Text004),
            (Some("text/plain;version=0.0.4"), Format::Text004),
            (
                Some("text/plain; version=0.0.4; q=0.9, application/json"),
                Format::Text004,
            ),
            (Some(prometheus), Format::OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=1.0.0"),
                Format::OpenMetrics,
            ),
            (
                Some("text/plain;q=0.2, application/openmetrics-text;q=0.8"),
                Format::OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;q=0.2, text/plain;q=0.8"),
                Format::Text004,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Text004),
            (Some("application/json"), Format::Text004),
            (Some("garbage;;q=x,,"), Format::Text004),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn openmetrics_rewritten_as_text_004() {
        let om = "# HELP x_conns Connections.\n# TYPE x_conns counter\nx_conns_total{a=\"1\"} 3\nx_conns_created{a=\"1\"} 1.5\n\
# HELP x_up Up \\\"now\\\".\n# TYPE x_up gauge\nx_up 1\n\
# HELP x_dur_seconds How long.\n# TYPE x_dur_seconds gauge\n# UNIT x_dur_seconds seconds\nx_dur_seconds 0.5\n\
# TYPE x_build info\nx_build_info{v=\"1\"} 1\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP x_conns_total Connections.\n# TYPE x_conns_total counter\nx_conns_total{a=\"1\"} 3\n\
# HELP x_up Up \"now\".\n# TYPE x_up gauge\nx_up 1\n\
# HELP x_dur_seconds How long.\n# TYPE x_dur_seconds gauge\nx_dur_seconds 0.5\n\
# TYPE x_build_info gauge\nx_build_info{v=\"1\"} 1\n"
        );
    }
}
