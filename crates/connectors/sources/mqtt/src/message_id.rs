//! Iggy message ids taken from what a publisher sent: a top-level JSON field of the
//! payload, or MQTT 5 correlation data. A publisher that retries with the same id then
//! makes the same Iggy message id (an Iggy server with deduplication keeps one).

use bytes::Bytes;

/// Where a message's id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdFrom {
    /// Iggy picks one.
    Nothing,
    /// The payload's top-level JSON field of this name.
    JsonField(String),
    /// The MQTT 5 correlation data.
    CorrelationData,
}

/// The id of a message, or why it has none. Id 0 is refused: Iggy reads it as "no id"
/// and picks one, so a retry would not repeat it.
pub fn message_id(
    from: &IdFrom,
    payload: &[u8],
    correlation_data: Option<&Bytes>,
) -> Result<Option<u128>, &'static str> {
    let id = found_id(from, payload, correlation_data)?;
    if id == Some(0) {
        return Err("0 is no id to Iggy");
    }
    Ok(id)
}

fn found_id(
    from: &IdFrom,
    payload: &[u8],
    correlation_data: Option<&Bytes>,
) -> Result<Option<u128>, &'static str> {
    match from {
        IdFrom::Nothing => Ok(None),
        IdFrom::JsonField(field) => {
            let value: serde_json::Value =
                serde_json::from_slice(payload).map_err(|_| "the payload is not JSON")?;
            match value.get(field) {
                Some(serde_json::Value::Number(number)) => number
                    .as_u64()
                    .map(|id| Some(u128::from(id)))
                    .ok_or("the field is not a whole number of at most 64 bits"),
                Some(serde_json::Value::String(text)) => parse_text(text).map(Some),
                Some(_) => Err("the field is neither a number nor a string"),
                None => Err("the payload has no such top-level field"),
            }
        }
        IdFrom::CorrelationData => {
            let data = correlation_data.ok_or("the message has no correlation data")?;
            // Text first (a UUID or a number a publisher wrote); other 16 bytes are a
            // binary id, big endian.
            if let Some(id) = std::str::from_utf8(data)
                .ok()
                .and_then(|text| parse_text(text).ok())
            {
                return Ok(Some(id));
            }
            let bytes = <[u8; 16]>::try_from(data.as_ref())
                .map_err(|_| "the correlation data is neither 16 bytes nor a UUID or number")?;
            Ok(Some(u128::from_be_bytes(bytes)))
        }
    }
}

/// A UUID (32 hex digits, with or without its hyphens) or a decimal number, as a
/// u128. 32 digits read as a UUID, so that a UUID written without hyphens is the same
/// id whether or not its digits happen to be all decimal.
fn parse_text(text: &str) -> Result<u128, &'static str> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let uuid_shaped = hex.len() == 32
        && (hex.len() == text.len() || is_hyphenated_uuid(text))
        && hex.bytes().all(|byte| byte.is_ascii_hexdigit());
    if uuid_shaped {
        return u128::from_str_radix(&hex, 16).map_err(|_| "not a UUID");
    }
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| "the number does not fit in 128 bits");
    }
    Err("the text is neither a UUID nor a decimal number")
}

/// `8-4-4-4-12` hex digits.
fn is_hyphenated_uuid(text: &str) -> bool {
    let groups: Vec<usize> = text.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(field: &str, payload: &str) -> Result<Option<u128>, &'static str> {
        message_id(
            &IdFrom::JsonField(field.to_owned()),
            payload.as_bytes(),
            None,
        )
    }

    #[test]
    fn json_fields_give_numbers_uuids_and_decimal_strings() {
        assert_eq!(json("id", r#"{"id": 42, "x": 1}"#), Ok(Some(42)));
        assert_eq!(
            json("id", r#"{"id": "340282366920938463463374607431768211455"}"#),
            Ok(Some(u128::MAX))
        );
        assert_eq!(
            json("id", r#"{"id": "123e4567-e89b-12d3-a456-426614174000"}"#),
            Ok(Some(0x123e4567_e89b_12d3_a456_426614174000))
        );
    }

    #[test]
    fn json_fields_that_cannot_be_ids_say_why() {
        assert!(json("id", "not json").is_err());
        assert!(json("id", r#"{"other": 1}"#).is_err());
        assert!(json("id", r#"{"id": -1}"#).is_err());
        assert!(json("id", r#"{"id": 1.5}"#).is_err());
        assert!(json("id", r#"{"id": {"nested": 1}}"#).is_err());
        assert!(json("id", r#"{"id": "abc"}"#).is_err());
        // Only the top level: a nested field of that name is not it.
        assert!(json("id", r#"{"inner": {"id": 1}}"#).is_err());
    }

    #[test]
    fn zero_is_no_id_and_32_digits_are_a_uuid() {
        assert!(json("id", r#"{"id": 0}"#).is_err());
        assert!(json("id", r#"{"id": "00000000-0000-0000-0000-000000000000"}"#).is_err());
        // The same UUID with and without hyphens, all of its digits decimal.
        let plain = json("id", r#"{"id": "12345678123412341234123456789012"}"#);
        let hyphens = json("id", r#"{"id": "12345678-1234-1234-1234-123456789012"}"#);
        assert_eq!(plain, hyphens);
        assert_eq!(plain, Ok(Some(0x12345678_1234_1234_1234_123456789012)));
        // Hyphens elsewhere make no UUID.
        assert!(json("id", r#"{"id": "1234-5678"}"#).is_err());
    }

    #[test]
    fn correlation_data_of_16_bytes_or_text() {
        let from = IdFrom::CorrelationData;
        let sixteen = Bytes::from(7u128.to_be_bytes().to_vec());
        assert_eq!(message_id(&from, b"", Some(&sixteen)), Ok(Some(7)));
        // 16 bytes of decimal text are the number they write.
        let digits = Bytes::from_static(b"1234567890123456");
        assert_eq!(
            message_id(&from, b"", Some(&digits)),
            Ok(Some(1_234_567_890_123_456))
        );
        let text = Bytes::from_static(b"123e4567e89b12d3a456426614174000");
        assert_eq!(
            message_id(&from, b"", Some(&text)),
            Ok(Some(0x123e4567_e89b_12d3_a456_426614174000))
        );
        assert!(message_id(&from, b"", None).is_err());
        assert!(message_id(&from, b"", Some(&Bytes::from_static(&[0xff, 0xfe]))).is_err());
    }
}
