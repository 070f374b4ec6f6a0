//! Prometheus text exposition of connector statuses (format 0.0.4), for the HTTP API.

use std::fmt::Write as _;

use crate::status::{ConnectorState, ConnectorStatus};

/// Every state a connector can be in, for the one-hot state gauge.
const STATES: [ConnectorState; 5] = [
    ConnectorState::Starting,
    ConnectorState::Running,
    ConnectorState::Stopped,
    ConnectorState::Failed,
    ConnectorState::Restarting,
];

/// Escapes a label value: backslash, double quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders statuses as Prometheus text.
///
/// ```
/// # use runtime_core::{ConnectorState, ConnectorStatus, prometheus_text};
/// let status = ConnectorStatus {
///     kind: connector_sdk::ConnectorKind::Sink,
///     key: "stdout".into(),
///     version: 1,
///     state: ConnectorState::Running,
///     last_error: None,
///     messages: 42,
///     retries: 0,
///     restarts: 0,
///     seconds_in_state: 3,
/// };
/// let text = prometheus_text(&[status]);
/// assert!(text.contains(r#"iggy_connectors_messages_total{kind="sink",key="stdout"} 42"#));
/// ```
pub fn prometheus_text(statuses: &[ConnectorStatus]) -> String {
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, value: &dyn Fn(&ConnectorStatus) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for status in statuses {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{}\",key=\"{}\"}} {}",
                    status.kind,
                    label(&status.key),
                    value(status)
                );
            }
        };
    family(
        "iggy_connectors_messages_total",
        "counter",
        "Messages a connector moved (produced by a source, delivered by a sink).",
        &|status| status.messages,
    );
    family(
        "iggy_connectors_retries_total",
        "counter",
        "Failed attempts that were retried.",
        &|status| status.retries,
    );
    family(
        "iggy_connectors_restarts_total",
        "counter",
        "Restarts after a failure.",
        &|status| u64::from(status.restarts),
    );
    family(
        "iggy_connectors_config_version",
        "gauge",
        "The config version a connector runs.",
        &|status| status.version,
    );
    family(
        "iggy_connectors_seconds_in_state",
        "gauge",
        "Seconds since the connector entered its current state.",
        &|status| status.seconds_in_state,
    );
    let _ = writeln!(
        out,
        "# HELP iggy_connectors_state 1 for the state a connector is in, else 0."
    );
    let _ = writeln!(out, "# TYPE iggy_connectors_state gauge");
    for status in statuses {
        for state in STATES {
            let _ = writeln!(
                out,
                "iggy_connectors_state{{kind=\"{}\",key=\"{}\",state=\"{state}\"}} {}",
                status.kind,
                label(&status.key),
                u8::from(status.state == state)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_sdk::ConnectorKind;

    fn status(key: &str, state: ConnectorState) -> ConnectorStatus {
        ConnectorStatus {
            kind: ConnectorKind::Source,
            key: key.to_owned(),
            version: 2,
            state,
            last_error: None,
            messages: 7,
            retries: 3,
            restarts: 1,
            seconds_in_state: 9,
        }
    }

    #[test]
    fn every_family_has_help_type_and_one_sample_per_connector() {
        let text = prometheus_text(&[
            status("a", ConnectorState::Running),
            status("b", ConnectorState::Failed),
        ]);
        for family in [
            "iggy_connectors_messages_total",
            "iggy_connectors_retries_total",
            "iggy_connectors_restarts_total",
            "iggy_connectors_config_version",
            "iggy_connectors_seconds_in_state",
            "iggy_connectors_state",
        ] {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
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
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.ends_with('}'), "{line}");
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
