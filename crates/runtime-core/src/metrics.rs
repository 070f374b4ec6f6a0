//! Prometheus text exposition of connector statuses (format 0.0.4), for the HTTP API.
//!
//! Two sets of families side by side: ours (`iggy_connectors_*`, labels `kind` and
//! `key`), and upstream's (Apache Iggy's connectors runtime: runtime gauges,
//! `iggy_connector_*` counters and the stage histogram, labels `connector_key` and
//! `connector_type`), so that dashboards built on either find their series. Both are
//! rendered from the same statuses: no second set of counters to keep in step.

use std::fmt::Write as _;

use connector_sdk::ConnectorKind;

use crate::status::{ConnectorState, ConnectorStatus, LATENCY_BUCKETS, STAGE_BUCKETS, Stage};

/// Escapes a label value: backslash, double quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One per-connector series: its name, Prometheus type, help and value.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&ConnectorStatus) -> u64,
}

const fn counter(
    name: &'static str,
    help: &'static str,
    value: fn(&ConnectorStatus) -> u64,
) -> Family {
    Family {
        name,
        kind: "counter",
        help,
        value,
    }
}

const fn gauge(
    name: &'static str,
    help: &'static str,
    value: fn(&ConnectorStatus) -> u64,
) -> Family {
    Family {
        name,
        kind: "gauge",
        help,
        value,
    }
}

const FAMILIES: [Family; 17] = [
    counter(
        "iggy_connectors_messages_in_total",
        "Messages received: from the plugin (source) or from Iggy (sink).",
        |s| s.metrics.messages_in,
    ),
    counter(
        "iggy_connectors_messages_out_total",
        "Messages delivered: stored by Iggy (source) or accepted by the plugin (sink).",
        |s| s.metrics.messages_out,
    ),
    counter(
        "iggy_connectors_bytes_in_total",
        "Payload bytes received.",
        |s| s.metrics.bytes_in,
    ),
    counter(
        "iggy_connectors_bytes_out_total",
        "Payload bytes delivered.",
        |s| s.metrics.bytes_out,
    ),
    counter(
        "iggy_connectors_errors_total",
        "Errors seen, retried or not.",
        |s| s.metrics.errors,
    ),
    counter(
        "iggy_connectors_retries_total",
        "Failed attempts that were retried.",
        |s| s.metrics.retries,
    ),
    counter(
        "iggy_connectors_skipped_total",
        "Messages the error policy passed over.",
        |s| s.metrics.skipped,
    ),
    counter(
        "iggy_connectors_filtered_total",
        "Messages a transform filtered out.",
        |s| s.metrics.filtered,
    ),
    counter(
        "iggy_connectors_dead_letters_total",
        "Messages sent to the dead letter topic.",
        |s| s.metrics.dead_letters,
    ),
    counter(
        "iggy_connectors_restarts_total",
        "Restarts after a failure.",
        |s| u64::from(s.restarts),
    ),
    counter(
        "iggy_connectors_group_resets_total",
        "Sinks: consumer group resets, after unread messages had no live reader.",
        |s| s.metrics.group_resets,
    ),
    gauge(
        "iggy_connectors_consumer_lag",
        "Sinks: messages beyond their consumer groups' stored offsets.",
        |s| s.metrics.lag,
    ),
    gauge(
        "iggy_connectors_memory_bytes",
        "Bytes the connector's pipeline holds now (batches in flight, read ahead, requests).",
        |s| s.metrics.memory_bytes,
    ),
    gauge(
        "iggy_connectors_memory_peak_bytes",
        "The most bytes the connector's pipeline held at once.",
        |s| s.metrics.memory_peak_bytes,
    ),
    gauge(
        "iggy_connectors_memory_budget_bytes",
        "The connector's memory budget (0: none).",
        |s| s.metrics.memory_budget_bytes,
    ),
    gauge(
        "iggy_connectors_config_version",
        "The config version a connector runs.",
        |s| s.version,
    ),
    gauge(
        "iggy_connectors_seconds_in_state",
        "Seconds since the connector entered its current state.",
        |s| s.seconds_in_state,
    ),
];

/// One of upstream's per-connector counters: its name (with the `_total` its samples
/// carry), help, the kind of connector it has series for (`None`: both) and value.
struct UpstreamCounter {
    name: &'static str,
    help: &'static str,
    only: Option<ConnectorKind>,
    value: fn(&ConnectorStatus) -> u64,
}

/// Upstream's per-connector counters, each from the figure of ours that counts the same
/// messages.
const UPSTREAM_COUNTERS: [UpstreamCounter; 6] = [
    UpstreamCounter {
        name: "iggy_connector_messages_produced_total",
        help: "Messages received from the source plugin's poll.",
        only: Some(ConnectorKind::Source),
        value: |s| s.metrics.messages_in,
    },
    UpstreamCounter {
        name: "iggy_connector_messages_sent_total",
        help: "Messages a source sent to Iggy (stored).",
        only: Some(ConnectorKind::Source),
        value: |s| s.metrics.messages_out,
    },
    UpstreamCounter {
        name: "iggy_connector_messages_consumed_total",
        help: "Messages a sink consumed from Iggy.",
        only: Some(ConnectorKind::Sink),
        value: |s| s.metrics.messages_in,
    },
    UpstreamCounter {
        name: "iggy_connector_messages_processed_total",
        help: "Messages a sink's plugin accepted.",
        only: Some(ConnectorKind::Sink),
        value: |s| s.metrics.messages_out,
    },
    UpstreamCounter {
        name: "iggy_connector_messages_filtered_total",
        help: "Messages a transform filtered out.",
        only: None,
        value: |s| s.metrics.filtered,
    },
    UpstreamCounter {
        name: "iggy_connector_errors_total",
        help: "Errors seen, retried or not.",
        only: None,
        value: |s| s.metrics.errors,
    },
];

/// Whether a connector counts as running in upstream's gauges: its state in upstream's
/// words (so a stalled sink runs, a paused one does not).
fn upstream_running(status: &ConnectorStatus) -> bool {
    status.state.upstream_status() == "running"
}

/// Renders statuses as Prometheus text.
///
/// ```
/// # use runtime_core::{ConnectorStatus, prometheus_text};
/// let mut status = ConnectorStatus::new(connector_sdk::ConnectorKind::Sink, "stdout", 1);
/// status.metrics.messages_out = 42;
/// let text = prometheus_text(&[status]);
/// assert!(text.contains(r#"iggy_connectors_messages_out_total{kind="sink",key="stdout"} 42"#));
/// ```
pub fn prometheus_text(statuses: &[ConnectorStatus]) -> String {
    let mut out = String::new();
    render_ours(&mut out, statuses);
    render_upstream(&mut out, statuses);
    out
}

/// Writes a family's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Our families (`iggy_connectors_*`, labels `kind` and `key`).
fn render_ours(out: &mut String, statuses: &[ConnectorStatus]) {
    let labels = |status: &ConnectorStatus| {
        format!("kind=\"{}\",key=\"{}\"", status.kind, label(&status.key))
    };
    for family in &FAMILIES {
        header(out, family.name, family.kind, family.help);
        for status in statuses {
            let _ = writeln!(
                out,
                "{}{{{}}} {}",
                family.name,
                labels(status),
                (family.value)(status)
            );
        }
    }
    header(
        out,
        "iggy_connectors_state",
        "gauge",
        "1 for the state a connector is in, else 0.",
    );
    for status in statuses {
        for state in ConnectorState::ALL {
            let _ = writeln!(
                out,
                "iggy_connectors_state{{{},state=\"{state}\"}} {}",
                labels(status),
                u8::from(status.state == state)
            );
        }
    }
    header(
        out,
        "iggy_connectors_transform_messages_total",
        "counter",
        "Messages per transform and outcome (in, out, dropped, failed).",
    );
    for status in statuses {
        for counts in &status.transforms {
            for (outcome, value) in [
                ("in", counts.messages_in),
                ("out", counts.messages_out),
                ("dropped", counts.dropped),
                ("failed", counts.failed),
            ] {
                let _ = writeln!(
                    out,
                    "iggy_connectors_transform_messages_total{{{},transform=\"{}\",outcome=\"{outcome}\"}} {value}",
                    labels(status),
                    label(&counts.name)
                );
            }
        }
    }
    let name = "iggy_connectors_batch_latency_seconds";
    header(
        out,
        name,
        "histogram",
        "Time from receiving a batch to delivering it.",
    );
    for status in statuses {
        let histogram = &status.metrics.batch_latency;
        let labels = labels(status);
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(histogram.buckets) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", histogram.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", histogram.count);
    }
}

/// Upstream's families: the runtime gauges (no labels), the per-connector counters and
/// the stage histogram (labels `connector_key`, `connector_type`).
fn render_upstream(out: &mut String, statuses: &[ConnectorStatus]) {
    let count = |kind: ConnectorKind, running: bool| {
        statuses
            .iter()
            .filter(|status| status.kind == kind && (!running || upstream_running(status)))
            .count()
    };
    for (name, help, kind, running) in [
        (
            "iggy_connectors_sources_total",
            "Source connectors configured.",
            ConnectorKind::Source,
            false,
        ),
        (
            "iggy_connectors_sources_running",
            "Source connectors running.",
            ConnectorKind::Source,
            true,
        ),
        (
            "iggy_connectors_sinks_total",
            "Sink connectors configured.",
            ConnectorKind::Sink,
            false,
        ),
        (
            "iggy_connectors_sinks_running",
            "Sink connectors running.",
            ConnectorKind::Sink,
            true,
        ),
    ] {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {}", count(kind, running));
    }
    let labels = |status: &ConnectorStatus| {
        format!(
            "connector_key=\"{}\",connector_type=\"{}\"",
            label(&status.key),
            status.kind
        )
    };
    for counter in &UPSTREAM_COUNTERS {
        header(out, counter.name, "counter", counter.help);
        for status in statuses {
            if counter.only.is_none_or(|kind| kind == status.kind) {
                let _ = writeln!(
                    out,
                    "{}{{{}}} {}",
                    counter.name,
                    labels(status),
                    (counter.value)(status)
                );
            }
        }
    }
    let name = "iggy_connector_stage_duration_seconds";
    header(
        out,
        name,
        "histogram",
        "How long a batch spent in each stage of the pipeline, seconds.",
    );
    for status in statuses {
        let connector = labels(status);
        for &stage in Stage::of(status.kind) {
            let histogram = status.metrics.stages.get(stage);
            let labels = format!("{connector},stage=\"{stage}\"");
            let mut cumulative = 0;
            for (bound, count) in STAGE_BUCKETS.iter().zip(histogram.buckets) {
                cumulative += count;
                let bound = upstream_float(*bound);
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
                histogram.count
            );
            let sum = upstream_float(histogram.sum_seconds);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", histogram.count);
        }
    }
}

/// A float as upstream's `prometheus-client` writes it (the `dtoa` crate's shortest
/// form): a whole number keeps a `.0` (`le="1.0"`, where Rust writes `1`), and an
/// exponent is used below 1e-6 and from 1e21. A dashboard may select `le` by its text.
fn upstream_float(value: f64) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        }
        .to_owned();
    }
    // The shortest digits and the decimal exponent, from Rust's own shortest form.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (length, point) = (digits.len() as i32, exponent + 1);
    let sign = if value < 0.0 { "-" } else { "" };
    let text = if length <= point && point <= 21 {
        format!("{digits}{}.0", "0".repeat((point - length) as usize))
    } else if 0 < point && point <= 21 {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{whole}.{fraction}")
    } else if -6 < point && point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        format!("{first}{rest}e{exponent}")
    };
    format!("{sign}{text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_sdk::ConnectorKind;
    use std::time::Duration;

    fn status(key: &str, state: ConnectorState) -> ConnectorStatus {
        let mut status = ConnectorStatus::new(ConnectorKind::Source, key, 2);
        status.state = state;
        status.metrics.retries = 3;
        status.transforms = vec![crate::TransformCounts {
            name: "filter".to_owned(),
            messages_in: 5,
            messages_out: 4,
            dropped: 1,
            failed: 0,
        }];
        status
            .metrics
            .batch_latency
            .observe(Duration::from_millis(3));
        status
            .metrics
            .batch_latency
            .observe(Duration::from_secs(20));
        status
    }

    #[test]
    fn every_family_has_help_type_and_one_sample_per_connector() {
        let text = prometheus_text(&[
            status("a", ConnectorState::Running),
            status("b", ConnectorState::Failed),
        ]);
        // Ours: upstream's families (tested below) have other labels.
        let families = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|line| line.split(' ').next().unwrap().to_owned())
            .filter(|family| !UPSTREAM_FAMILIES.contains(&family.as_str()))
            .collect::<Vec<_>>();
        assert_eq!(families.len(), FAMILIES.len() + 3);
        for family in &families {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(
                text.contains(&format!("\n{family}{{kind=\"source\",key=\"a\""))
                    || text.contains(&format!("\n{family}_count{{kind=\"source\",key=\"a\"")),
                "{family}"
            );
        }
        assert!(text.contains("iggy_connectors_retries_total{kind=\"source\",key=\"a\"} 3\n"));
        assert!(
            text.contains("iggy_connectors_state{kind=\"source\",key=\"a\",state=\"running\"} 1\n")
        );
        assert!(
            text.contains("iggy_connectors_state{kind=\"source\",key=\"a\",state=\"failed\"} 0\n")
        );
        assert!(
            text.contains("iggy_connectors_state{kind=\"source\",key=\"b\",state=\"failed\"} 1\n")
        );
        // Buckets are cumulative; +Inf holds every batch.
        let bucket = "iggy_connectors_batch_latency_seconds_bucket{kind=\"source\",key=\"a\"";
        assert!(text.contains(&format!("{bucket},le=\"0.0025\"}} 0\n")));
        assert!(text.contains(&format!("{bucket},le=\"0.005\"}} 1\n")));
        assert!(text.contains(&format!("{bucket},le=\"10\"}} 1\n")));
        assert!(text.contains(&format!("{bucket},le=\"+Inf\"}} 2\n")));
        // Every sample line is `name{labels} value`, or `name value` for upstream's
        // runtime gauges.
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(
                series.ends_with('}') || UPSTREAM_FAMILIES[..4].contains(&series),
                "{line}"
            );
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn transform_counters_have_one_series_per_outcome() {
        let text = prometheus_text(&[status("a", ConnectorState::Running)]);
        let series = "iggy_connectors_transform_messages_total{kind=\"source\",key=\"a\",transform=\"filter\",outcome=\"dropped\"} 1\n";
        assert!(text.contains(series), "{text}");
    }

    /// Upstream's family names, spelled out (not taken from the code under test): a
    /// rename fails the tests. The four runtime gauges first.
    const UPSTREAM_FAMILIES: [&str; 11] = [
        "iggy_connectors_sources_total",
        "iggy_connectors_sources_running",
        "iggy_connectors_sinks_total",
        "iggy_connectors_sinks_running",
        "iggy_connector_messages_produced_total",
        "iggy_connector_messages_sent_total",
        "iggy_connector_messages_consumed_total",
        "iggy_connector_messages_processed_total",
        "iggy_connector_messages_filtered_total",
        "iggy_connector_errors_total",
        "iggy_connector_stage_duration_seconds",
    ];

    /// One sample line: its name, its labels in order, and its value.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// Rendered text, parsed: each family's `# TYPE`, the families with a `# HELP`, and
    /// every sample. Panics on a line that is neither a comment nor a sample.
    struct Parsed {
        types: std::collections::BTreeMap<String, String>,
        helped: std::collections::BTreeSet<String>,
        samples: Vec<Sample>,
    }

    impl Parsed {
        fn of(text: &str) -> Self {
            let mut parsed = Parsed {
                types: Default::default(),
                helped: Default::default(),
                samples: Vec::new(),
            };
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, kind) = rest.split_once(' ').unwrap();
                    let earlier = parsed.types.insert(name.to_owned(), kind.to_owned());
                    assert!(earlier.is_none(), "{name} typed twice");
                } else if let Some(rest) = line.strip_prefix("# HELP ") {
                    parsed
                        .helped
                        .insert(rest.split_once(' ').unwrap().0.to_owned());
                } else {
                    parsed.samples.push(sample(line));
                }
            }
            parsed
        }

        /// The samples named `name`.
        fn named(&self, name: &str) -> Vec<&Sample> {
            self.samples.iter().filter(|s| s.name == name).collect()
        }
    }

    /// Parses `name value` or `name{key="value",...} value` (values escaped as
    /// [`label`] escapes them).
    fn sample(line: &str) -> Sample {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let Some((name, rest)) = series.split_once('{') else {
            return Sample {
                name: series.to_owned(),
                labels: Vec::new(),
                value,
            };
        };
        let mut labels = Vec::new();
        let mut chars = rest.strip_suffix('}').unwrap().chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match chars.next().unwrap() {
                    '"' => break,
                    '\\' => match chars.next().unwrap() {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.push((key, value));
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        Sample {
            name: name.to_owned(),
            labels,
            value,
        }
    }

    /// `pairs` as owned label pairs.
    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn of_kind(kind: ConnectorKind, key: &str, state: ConnectorState) -> ConnectorStatus {
        let mut status = ConnectorStatus::new(kind, key, 1);
        status.state = state;
        status
    }

    #[test]
    fn upstream_runtime_gauges_count_connectors_running_in_upstreams_words() {
        use ConnectorKind::{Sink, Source};
        use ConnectorState::*;
        let statuses = [
            of_kind(Source, "running", Running),
            of_kind(Source, "stalled", Stalled),
            of_kind(Source, "paused", Paused),
            of_kind(Source, "failed", Failed),
            of_kind(Source, "starting", Starting),
            of_kind(Sink, "running", Running),
            of_kind(Sink, "error", Error),
        ];
        let parsed = Parsed::of(&prometheus_text(&statuses));
        for (name, value) in [
            ("iggy_connectors_sources_total", 5.0),
            ("iggy_connectors_sources_running", 2.0),
            ("iggy_connectors_sinks_total", 2.0),
            ("iggy_connectors_sinks_running", 1.0),
        ] {
            assert_eq!(
                parsed.types.get(name).map(String::as_str),
                Some("gauge"),
                "{name}"
            );
            assert!(parsed.helped.contains(name), "{name}");
            let expected = Sample {
                name: name.to_owned(),
                labels: Vec::new(),
                value,
            };
            assert_eq!(parsed.named(name), [&expected], "{name}");
        }
        // With no connectors, the gauges still say 0.
        let parsed = Parsed::of(&prometheus_text(&[]));
        assert_eq!(parsed.named("iggy_connectors_sinks_running")[0].value, 0.0);
    }

    #[test]
    fn upstream_counters_have_their_labels_and_only_their_kinds_series() {
        let mut source = of_kind(ConnectorKind::Source, "src", ConnectorState::Running);
        source.metrics.messages_in = 11;
        source.metrics.messages_out = 7;
        source.metrics.filtered = 2;
        source.metrics.errors = 3;
        let mut sink = of_kind(ConnectorKind::Sink, "snk \"1\"", ConnectorState::Running);
        sink.metrics.messages_in = 13;
        sink.metrics.messages_out = 5;
        sink.metrics.filtered = 4;
        sink.metrics.errors = 1;
        let parsed = Parsed::of(&prometheus_text(&[source, sink]));
        let src = [("connector_key", "src"), ("connector_type", "source")];
        let snk = [("connector_key", "snk \"1\""), ("connector_type", "sink")];
        // Each counter with its series: (labels, value).
        type Series<'a> = &'a [(&'a [(&'a str, &'a str)], f64)];
        let expected: [(&str, Series<'_>); 6] = [
            ("iggy_connector_messages_produced_total", &[(&src, 11.0)]),
            ("iggy_connector_messages_sent_total", &[(&src, 7.0)]),
            ("iggy_connector_messages_consumed_total", &[(&snk, 13.0)]),
            ("iggy_connector_messages_processed_total", &[(&snk, 5.0)]),
            (
                "iggy_connector_messages_filtered_total",
                &[(&src, 2.0), (&snk, 4.0)],
            ),
            ("iggy_connector_errors_total", &[(&src, 3.0), (&snk, 1.0)]),
        ];
        assert_eq!(
            expected.map(|(name, _)| name),
            UPSTREAM_FAMILIES[4..10],
            "every counter checked"
        );
        for (name, series) in expected {
            assert_eq!(
                parsed.types.get(name).map(String::as_str),
                Some("counter"),
                "{name}"
            );
            assert!(parsed.helped.contains(name), "{name}");
            let want = series
                .iter()
                .map(|(pairs, value)| Sample {
                    name: name.to_owned(),
                    labels: labels(pairs),
                    value: *value,
                })
                .collect::<Vec<_>>();
            assert_eq!(
                parsed.named(name),
                want.iter().collect::<Vec<_>>(),
                "{name}"
            );
        }
    }

    #[test]
    fn floats_are_written_as_upstreams_prometheus_client_writes_them() {
        for (value, text) in [
            (1.0, "1.0"),
            (5.0, "5.0"),
            (0.5, "0.5"),
            (2.5, "2.5"),
            (123.456, "123.456"),
            (0.00005, "0.00005"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (12_340_000_000.0, "12340000000.0"),
            (1e20, "100000000000000000000.0"),
            (1e21, "1e21"),
            (-1.5, "-1.5"),
            (0.0, "0.0"),
        ] {
            assert_eq!(upstream_float(value), text, "{value:e}");
        }
    }

    #[test]
    fn upstream_stage_histogram_has_each_kinds_stages_in_upstreams_buckets() {
        use crate::status::{BatchStages, StatusCell};
        let name = "iggy_connector_stage_duration_seconds";
        // Upstream's bounds, as rendered: a dashboard may select `le` by its text.
        let bounds = [
            "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.005", "0.01", "0.05", "0.1",
            "0.25", "0.5", "1.0", "5.0", "+Inf",
        ];
        let source = StatusCell::new(ConnectorKind::Source, "src", 1);
        let mut stages = BatchStages::default();
        stages.set(Stage::Decode, Duration::from_micros(30));
        stages.set(Stage::Prepare, Duration::from_millis(2));
        stages.set(Stage::IggySend, Duration::from_millis(60));
        stages.set(Stage::StateSave, Duration::from_micros(100));
        source.delivered(10, 100, Duration::from_secs(20), &stages);
        // A batch no state write covered: no `state_save`; `total` counts every batch.
        let mut stages = BatchStages::default();
        stages.set(Stage::Decode, Duration::from_micros(50));
        source.delivered(10, 100, Duration::from_millis(3), &stages);
        let sink = StatusCell::new(ConnectorKind::Sink, "snk", 1);
        let mut stages = BatchStages::default();
        stages.set(Stage::Ffi, Duration::from_millis(7));
        sink.delivered(1, 1, Duration::from_millis(8), &stages);
        let parsed = Parsed::of(&prometheus_text(&[source.snapshot(), sink.snapshot()]));
        assert_eq!(
            parsed.types.get(name).map(String::as_str),
            Some("histogram")
        );
        assert!(parsed.helped.contains(name));

        // (key, type, stage, count, sum, cumulative count per bound)
        type Expected = (
            &'static str,
            &'static str,
            &'static str,
            f64,
            f64,
            [f64; 14],
        );
        let expected: [Expected; 9] = [
            ("src", "source", "decode", 2.0, 80e-6, [2.0; 14]),
            (
                "src",
                "source",
                "prepare",
                1.0,
                2e-3,
                [
                    0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                ],
            ),
            (
                "src",
                "source",
                "iggy_send",
                1.0,
                60e-3,
                [
                    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                ],
            ),
            (
                "src",
                "source",
                "state_save",
                1.0,
                100e-6,
                [
                    0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                ],
            ),
            (
                "src",
                "source",
                "total",
                2.0,
                20.003,
                [
                    0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0,
                ],
            ),
            ("snk", "sink", "decode", 0.0, 0.0, [0.0; 14]),
            ("snk", "sink", "prepare", 0.0, 0.0, [0.0; 14]),
            (
                "snk",
                "sink",
                "ffi",
                1.0,
                7e-3,
                [
                    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                ],
            ),
            (
                "snk",
                "sink",
                "total",
                1.0,
                8e-3,
                [
                    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                ],
            ),
        ];
        let series = |suffix: &str| parsed.named(&format!("{name}_{suffix}"));
        // Nothing beyond the expected series: a sink has no `iggy_send`, a source no `ffi`.
        assert_eq!(series("bucket").len(), expected.len() * bounds.len());
        assert_eq!(series("sum").len(), expected.len());
        assert_eq!(series("count").len(), expected.len());
        for (key, kind, stage, count, sum, cumulative) in expected {
            let stage_labels = [
                ("connector_key", key),
                ("connector_type", kind),
                ("stage", stage),
            ];
            let own = |sample: &&&Sample| sample.labels[..] == labels(&stage_labels)[..];
            let counted = series("count")
                .into_iter()
                .filter(|s| own(&s))
                .collect::<Vec<_>>();
            assert_eq!(counted.len(), 1, "{key} {stage}");
            assert_eq!(counted[0].value, count, "{key} {stage}");
            let summed = series("sum")
                .into_iter()
                .filter(|s| own(&s))
                .collect::<Vec<_>>();
            assert_eq!(summed.len(), 1, "{key} {stage}");
            assert!(
                (summed[0].value - sum).abs() < 1e-9,
                "{key} {stage}: {summed:?}"
            );
            let buckets = series("bucket")
                .into_iter()
                .filter(|s| s.labels[..3] == labels(&stage_labels)[..])
                .collect::<Vec<_>>();
            let le = buckets
                .iter()
                .map(|s| {
                    assert_eq!(s.labels.len(), 4, "{s:?}");
                    assert_eq!(s.labels[3].0, "le", "{s:?}");
                    s.labels[3].1.as_str()
                })
                .collect::<Vec<_>>();
            assert_eq!(le, bounds, "{key} {stage}");
            let counts = buckets.iter().map(|s| s.value).collect::<Vec<_>>();
            assert_eq!(counts, cumulative, "{key} {stage}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
