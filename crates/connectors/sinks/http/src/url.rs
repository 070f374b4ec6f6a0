//! The URL template: `{stream}`, `{topic}` and `{partition}` from the batch,
//! `{header:<key>}` from a message header and `{field:<key>}` from a top-level field of
//! a JSON payload, each percent-encoded into the URL.

use connector_sdk::{Error, Message, MessageBatch};
use hyper::Uri;

use crate::body::header_text;
use crate::config::redact_url;

/// A piece of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Text(String),
    Stream,
    Topic,
    Partition,
    Header(String),
    Field(String),
}

/// A parsed `url`.
#[derive(Debug, Clone)]
pub(crate) enum UrlTemplate {
    /// No placeholders: parsed once.
    Fixed(Uri),
    /// Only the batch's placeholders: one URL per batch.
    PerBatch(Vec<Part>),
    /// A header or field placeholder: one URL per message.
    PerMessage(Vec<Part>),
}

impl UrlTemplate {
    /// Parses `url`; the error names what is wrong.
    pub(crate) fn parse(url: &str) -> Result<UrlTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = url;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| {
                format!(
                    "a '{{' at byte {} is never closed",
                    url.len() - rest.len() + open
                )
            })?;
            let name = &after[..close];
            parts.push(match name {
                "stream" => Part::Stream,
                "topic" => Part::Topic,
                "partition" => Part::Partition,
                _ => match name.split_once(':') {
                    Some(("header", key)) if !key.is_empty() => Part::Header(key.to_owned()),
                    Some(("field", key)) if !key.is_empty() => Part::Field(key.to_owned()),
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{name}}} (known: {{stream}}, {{topic}}, {{partition}}, {{header:<key>}}, {{field:<key>}})"
                        ));
                    }
                },
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        // What the URL looks like with sample values must be an http(s) URL.
        let sample: String = parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.as_str(),
                Part::Partition => "1",
                _ => "x",
            })
            .collect();
        match sample.parse::<Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
            Ok(_) => {
                return Err(format!(
                    "expected an http:// or https:// URL with a host, got {:?}",
                    redact_url(url)
                ));
            }
            Err(error) => return Err(format!("{:?} is not a URL: {error}", redact_url(url))),
        }
        let per_message = parts
            .iter()
            .any(|part| matches!(part, Part::Header(_) | Part::Field(_)));
        let fixed = parts.iter().all(|part| matches!(part, Part::Text(_)));
        Ok(if fixed {
            UrlTemplate::Fixed(
                sample
                    .parse()
                    .map_err(|error| format!("{:?} is not a URL: {error}", redact_url(url)))?,
            )
        } else if per_message {
            UrlTemplate::PerMessage(parts)
        } else {
            UrlTemplate::PerBatch(parts)
        })
    }

    /// The batch cut into runs of consecutive messages that go to one URL, in order.
    pub(crate) fn runs<'b>(
        &self,
        batch: &MessageBatch<'b>,
    ) -> Result<Vec<(Uri, MessageBatch<'b>)>, Error> {
        match self {
            UrlTemplate::Fixed(uri) => Ok(vec![(uri.clone(), *batch)]),
            UrlTemplate::PerBatch(parts) => Ok(vec![(render(parts, batch, None)?, *batch)]),
            UrlTemplate::PerMessage(parts) => {
                let mut runs: Vec<(Uri, MessageBatch<'b>)> = Vec::new();
                let mut start = 0;
                let mut current: Option<Uri> = None;
                for (index, message) in batch.messages.iter().enumerate() {
                    let uri = render(parts, batch, Some(message))?;
                    if let Some(previous) = current.take_if(|previous| *previous != uri) {
                        runs.push((previous, sub_batch(batch, start, index)));
                        start = index;
                    }
                    current = Some(uri);
                }
                if let Some(uri) = current {
                    runs.push((uri, sub_batch(batch, start, batch.messages.len())));
                }
                Ok(runs)
            }
        }
    }
}

fn sub_batch<'b>(batch: &MessageBatch<'b>, from: usize, to: usize) -> MessageBatch<'b> {
    MessageBatch {
        messages: &batch.messages[from..to],
        ..*batch
    }
}

/// The URL of `batch` (and `message`, for the per-message placeholders).
fn render(
    parts: &[Part],
    batch: &MessageBatch<'_>,
    message: Option<&Message<'_>>,
) -> Result<Uri, Error> {
    let mut url = String::new();
    let mut payload: Option<serde_json::Map<String, serde_json::Value>> = None;
    for part in parts {
        match part {
            Part::Text(text) => url.push_str(text),
            Part::Stream => url.push_str(&percent_encode(batch.stream)),
            Part::Topic => url.push_str(&percent_encode(batch.topic)),
            Part::Partition => url.push_str(&batch.partition_id.to_string()),
            Part::Header(key) => {
                let Some(message) = message else { continue };
                let value = message
                    .header(key)
                    .and_then(|header| header_text(header.kind, header.value))
                    .ok_or_else(|| {
                        Error::permanent(format!(
                            "the message at offset {} has no header {key:?} with a text value for the URL",
                            message.offset()
                        ))
                    })?;
                url.push_str(&percent_encode(&value));
            }
            Part::Field(key) => {
                let Some(message) = message else { continue };
                if payload.is_none() {
                    payload = serde_json::from_slice(message.payload()).ok();
                }
                let value = payload
                    .as_ref()
                    .and_then(|object| object.get(key))
                    .and_then(|value| match value {
                        serde_json::Value::String(text) => Some(text.clone()),
                        serde_json::Value::Number(number) => Some(number.to_string()),
                        serde_json::Value::Bool(flag) => Some(flag.to_string()),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        Error::permanent(format!(
                            "the message at offset {} has no top-level JSON field {key:?} with a string, number or boolean for the URL",
                            message.offset()
                        ))
                    })?;
                url.push_str(&percent_encode(&value));
            }
        }
    }
    url.parse().map_err(|error| {
        Error::permanent(format!(
            "the URL {:?} made for {}/{} partition {} is not valid: {error}",
            redact_url(&url),
            batch.stream,
            batch.topic,
            batch.partition_id
        ))
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a value put
/// into a URL.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_into_their_kind() {
        assert!(matches!(
            UrlTemplate::parse("http://h/x"),
            Ok(UrlTemplate::Fixed(_))
        ));
        assert!(matches!(
            UrlTemplate::parse("http://h/{stream}/{partition}"),
            Ok(UrlTemplate::PerBatch(_))
        ));
        assert!(matches!(
            UrlTemplate::parse("http://h/{header:tenant}/{field:id}"),
            Ok(UrlTemplate::PerMessage(_))
        ));
        let unknown = UrlTemplate::parse("http://h/{tenant}").unwrap_err();
        assert!(
            unknown.contains("unknown placeholder {tenant}"),
            "{unknown}"
        );
        assert!(UrlTemplate::parse("http://h/{stream").is_err());
        assert!(UrlTemplate::parse("ftp://h/x").is_err());
    }

    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(percent_encode("a b/c-d_é"), "a%20b%2Fc-d_%C3%A9");
    }
}
