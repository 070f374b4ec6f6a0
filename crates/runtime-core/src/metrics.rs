//! Prometheus text exposition of connector statuses (format 0.0.4), for the HTTP API.

use std::fmt::Write as _;

use crate::status::{ConnectorState, ConnectorStatus, LATENCY_BUCKETS};

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

const FAMILIES: [Family; 14] = [
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
    let labels = |status: &ConnectorStatus| {
        format!("kind=\"{}\",key=\"{}\"", status.kind, label(&status.key))
    };
    let header = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    for family in &FAMILIES {
        header(&mut out, family.name, family.kind, family.help);
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
        &mut out,
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
        &mut out,
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
        &mut out,
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
    out
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
        let families = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|line| line.split(' ').next().unwrap().to_owned())
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
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.ends_with('}'), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn transform_counters_have_one_series_per_outcome() {
        let text = prometheus_text(&[status("a", ConnectorState::Running)]);
        let series = "iggy_connectors_transform_messages_total{kind=\"source\",key=\"a\",transform=\"filter\",outcome=\"dropped\"} 1\n";
        assert!(text.contains(series), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
