//! Human-readable durations, as config files write them: `"10s"`, `"1 s"`, `"500ms"`,
//! `"1m"`, `"1h 30m"`, `"1000ms"`.

use std::time::Duration;

/// Parses a duration: one or more `<number><unit>` parts, optionally separated by
/// spaces. Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`, with their long forms
/// (`sec`, `secs`, `second(s)`, `min`, `mins`, `minute(s)`, `hour(s)`, `day(s)`,
/// `msec`, `millis`).
///
/// ```
/// use std::time::Duration;
/// use connector_sdk::duration::parse_duration;
/// assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
/// assert_eq!(parse_duration("1 s"), Ok(Duration::from_secs(1)));
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert!(parse_duration("5 parsecs").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = |reason: &str| format!("invalid duration {text:?}: {reason}");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid("expected a number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| invalid("the number is too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let nanos_per_unit: u64 = match unit {
            "ns" | "nsec" | "nanos" => 1,
            "us" | "µs" | "usec" | "micros" => 1_000,
            "ms" | "msec" | "millis" => 1_000_000,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
            "h" | "hr" | "hour" | "hours" => 3_600_000_000_000,
            "d" | "day" | "days" => 86_400_000_000_000,
            "" => return Err(invalid("a unit is missing (e.g. ms, s, m, h)")),
            _ => return Err(invalid(&format!("unknown unit {unit:?}"))),
        };
        let nanos = number
            .checked_mul(nanos_per_unit)
            .ok_or_else(|| invalid("it is too long"))?;
        total = total
            .checked_add(Duration::from_nanos(nanos))
            .ok_or_else(|| invalid("it is too long"))?;
    }
    Ok(total)
}

/// Serde helper: `#[serde(deserialize_with = "connector_sdk::duration::deserialize")]`.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// A duration as the text [`parse_duration`] reads back: whole seconds as `"10s"`,
/// else milliseconds (`"500ms"`), else microseconds.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}us", duration.as_micros())
    }
}

/// Serde helper: `#[serde(serialize_with = "connector_sdk::duration::serialize")]`,
/// for a config's defaults to read as they are written.
pub fn serialize<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_duration(*duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_durations_parse_back() {
        for duration in [
            Duration::from_secs(90),
            Duration::from_millis(1500),
            Duration::from_micros(250),
            Duration::ZERO,
        ] {
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        assert_eq!(format_duration(Duration::from_secs(1)), "1s");
    }

    #[test]
    fn accepts_the_documented_forms() {
        let cases = [
            ("10s", Duration::from_secs(10)),
            ("1 s", Duration::from_secs(1)),
            ("500ms", Duration::from_millis(500)),
            ("1000ms", Duration::from_secs(1)),
            ("1m", Duration::from_secs(60)),
            ("1h 30m", Duration::from_secs(5400)),
            ("1h30m", Duration::from_secs(5400)),
            ("5ms", Duration::from_millis(5)),
            ("250us", Duration::from_micros(250)),
            ("2 days", Duration::from_secs(172_800)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_bad_input_with_the_reason() {
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(
            parse_duration("10")
                .unwrap_err()
                .contains("unit is missing")
        );
        assert!(
            parse_duration("ten s")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(
            parse_duration("3 fortnights")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("99999999999999999999s")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_duration("999999999999d")
                .unwrap_err()
                .contains("too long")
        );
    }
}
