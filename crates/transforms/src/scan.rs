//! A fast scanner for the top level of a JSON object: it finds each key and value span
//! without building anything, so a transform that reads a few fields of a large
//! document does not pay for parsing the rest.
//!
//! What it checks: the top-level structure (`{ "key": value, ... }` and nothing after
//! it), that every string is free of raw control characters and with valid escape
//! sequences (the whole document is checked for UTF-8 once), that brackets nest, and that scalars are JSON literals. Nested values are
//! parsed fully only when a transform reads them.

/// `(key span, key has escapes, value span)` of each top-level field.
pub(crate) type Spans = Vec<((usize, usize), bool, (usize, usize))>;

/// Where the first byte of `bytes` that ends a run of plain string characters is: a
/// quote, a backslash or a control byte (below 0x20). Eight bytes at a time: a byte `b`
/// equals `c` when `(b ^ c) - 1` borrows into its high bit while `b ^ c`'s own high bit
/// is clear, and is below 0x20 when `b - 0x20` does the same. A borrow can flag bytes
/// after a true match, never before it, so the lowest flag is exact.
fn string_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let flags = |word: &[u8]| {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let word = u64::from_le_bytes(eight);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGH
    };
    // 32 bytes per test while nothing is found (long texts), then word by word.
    let mut blocks = bytes.chunks_exact(32);
    let mut at = 0;
    for block in &mut blocks {
        let any =
            flags(&block[..8]) | flags(&block[8..16]) | flags(&block[16..24]) | flags(&block[24..]);
        if any != 0 {
            break;
        }
        at += 32;
    }
    let mut words = bytes[at..].chunks_exact(8);
    for word in &mut words {
        let found = flags(word);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        .map(|offset| at + offset)
}

/// Deepest nesting of objects and arrays in a value.
const MAX_DEPTH: u32 = 128;

/// Whether `token` is a JSON literal or number (RFC 8259's grammar).
fn scalar(token: &[u8]) -> bool {
    if matches!(token, b"true" | b"false" | b"null") {
        return true;
    }
    let digits = |from: usize| {
        token[from..]
            .iter()
            .position(|byte| !byte.is_ascii_digit())
            .map_or(token.len(), |offset| from + offset)
    };
    let mut at = usize::from(token.first() == Some(&b'-'));
    // The integer part: 0, or digits not starting with 0.
    match token.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at = digits(at),
        _ => return false,
    }
    if token.get(at) == Some(&b'.') {
        let end = digits(at + 1);
        if end == at + 1 {
            return false;
        }
        at = end;
    }
    if matches!(token.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(token.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let end = digits(at);
        if end == at {
            return false;
        }
        at = end;
    }
    at == token.len()
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn error(&self, what: &str) -> String {
        format!("invalid JSON at byte {}: {what}", self.at)
    }

    fn skip_ws(&mut self) {
        while let Some(byte) = self.bytes.get(self.at) {
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.skip_ws();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", byte as char)))
        }
    }

    /// Scans a string whose opening quote is at `at`; returns its contents' span and
    /// whether it has escapes.
    fn string(&mut self) -> Result<((usize, usize), bool), String> {
        self.at += 1;
        let start = self.at;
        let mut escaped = false;
        loop {
            let Some(offset) = string_stop(&self.bytes[self.at..]) else {
                return Err(self.error("unterminated string"));
            };
            self.at += offset;
            match self.bytes[self.at] {
                b'"' => {
                    let span = (start, self.at);
                    self.at += 1;
                    return Ok((span, escaped));
                }
                b'\\' => {}
                _ => return Err(self.error("control character in a string")),
            }
            escaped = true;
            match self.bytes.get(self.at + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.at += 2,
                Some(b'u') => {
                    let hex = self.bytes.get(self.at + 2..self.at + 6);
                    if !hex.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                        return Err(self.error("bad \\u escape"));
                    }
                    self.at += 6;
                }
                _ => return Err(self.error("bad escape")),
            }
        }
    }

    /// Scans any value starting at `at` (after whitespace); returns its span.
    fn value(&mut self) -> Result<(usize, usize), String> {
        self.skip_ws();
        let start = self.at;
        match self.bytes.get(self.at) {
            Some(b'"') => {
                self.string()?;
            }
            Some(b'{' | b'[') => self.nested()?,
            Some(_) => {
                let end = self.bytes[self.at..]
                    .iter()
                    .position(|byte| !matches!(byte, b'0'..=b'9' | b'a'..=b'z' | b'-' | b'+' | b'.' | b'E'))
                    .map_or(self.bytes.len(), |offset| self.at + offset);
                if !scalar(&self.bytes[self.at..end]) {
                    return Err(self.error("not a JSON value"));
                }
                self.at = end;
            }
            None => return Err(self.error("a value is missing")),
        }
        Ok((start, self.at))
    }

    /// Skips an object or array, checking that brackets nest and strings are sound.
    /// Open brackets are kept as bits (1 = object), so nesting is limited to
    /// [`MAX_DEPTH`] levels, as serde_json limits it to 128.
    fn nested(&mut self) -> Result<(), String> {
        let (mut objects, mut depth) = (0u128, 0u32);
        loop {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(self.error("unterminated object or array"));
            };
            match byte {
                b'{' | b'[' => {
                    if depth == MAX_DEPTH {
                        return Err(self.error("nested too deeply"));
                    }
                    objects = objects << 1 | u128::from(byte == b'{');
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' => {
                    if depth == 0 || (objects & 1 == 1) != (byte == b'}') {
                        return Err(self.error("brackets do not match"));
                    }
                    objects >>= 1;
                    depth -= 1;
                    self.at += 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                b'"' => {
                    self.string()?;
                }
                byte if byte < 0x20 && !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') => {
                    return Err(self.error("control character"));
                }
                _ => self.at += 1,
            }
        }
    }
}

/// The spans of a top-level object's fields, or why `bytes` is not one.
pub(crate) fn object(bytes: &[u8]) -> Result<Spans, String> {
    // Once for the whole document: every span is then UTF-8 too, as spans start and
    // end at ASCII delimiters.
    if !bytes.is_ascii()
        && let Err(error) = std::str::from_utf8(bytes)
    {
        return Err(format!(
            "invalid JSON at byte {}: not UTF-8",
            error.valid_up_to()
        ));
    }
    let mut scanner = Scanner { bytes, at: 0 };
    scanner.expect(b'{')?;
    let mut fields = Vec::with_capacity(16);
    scanner.skip_ws();
    if scanner.bytes.get(scanner.at) == Some(&b'}') {
        scanner.at += 1;
    } else {
        loop {
            scanner.skip_ws();
            if scanner.bytes.get(scanner.at) != Some(&b'"') {
                return Err(scanner.error("expected a key"));
            }
            let (key, escaped) = scanner.string()?;
            scanner.expect(b':')?;
            let value = scanner.value()?;
            fields.push((key, escaped, value));
            scanner.skip_ws();
            match scanner.bytes.get(scanner.at) {
                Some(b',') => scanner.at += 1,
                Some(b'}') => {
                    scanner.at += 1;
                    break;
                }
                _ => return Err(scanner.error("expected `,` or `}`")),
            }
        }
    }
    scanner.skip_ws();
    if scanner.at != bytes.len() {
        return Err(scanner.error("trailing characters after the object"));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_of_every_kind_of_value() {
        let text = br#" { "a" : 1.5e3 , "b":{"x":[1,"]}"]}, "c\n":"q\"\u00e9", "d":[], "e":null,"f":true } "#;
        let fields = object(text).unwrap();
        let show = |(start, end): (usize, usize)| std::str::from_utf8(&text[start..end]).unwrap();
        let shown: Vec<(&str, bool, &str)> = fields
            .iter()
            .map(|(k, e, v)| (show(*k), *e, show(*v)))
            .collect();
        assert_eq!(
            shown,
            [
                ("a", false, "1.5e3"),
                ("b", false, r#"{"x":[1,"]}"]}"#),
                (r"c\n", true, r#""q\"\u00e9""#),
                ("d", false, "[]"),
                ("e", false, "null"),
                ("f", false, "true"),
            ]
        );
        assert_eq!(object(b"{}").unwrap(), vec![]);
    }

    #[test]
    fn scalars_follow_the_json_grammar() {
        for good in [
            "0", "-0", "7", "-12", "1.5", "0.25", "1e3", "1E+3", "-2.5e-7", "true", "false", "null",
        ] {
            assert!(scalar(good.as_bytes()), "{good}");
            assert!(serde_json::from_str::<serde_json::Value>(good).is_ok());
        }
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "1e+", "+1", "--1", "1.2.3", "tru", "nul", "1-2",
            "0x10", "1ee3",
        ] {
            assert!(!scalar(bad.as_bytes()), "{bad}");
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn nesting_is_checked_and_bounded() {
        let deep =
            |levels: usize| format!("{{\"a\":{}1{}}}", "[".repeat(levels), "]".repeat(levels));
        assert!(object(deep(MAX_DEPTH as usize).as_bytes()).is_ok());
        let too_deep = object(deep(MAX_DEPTH as usize + 1).as_bytes()).unwrap_err();
        assert!(too_deep.contains("nested too deeply"), "{too_deep}");
        assert!(object(br#"{"a":[{"b":1}]}"#).is_ok());
        assert!(object(br#"{"a":[{"b":1]}]}"#).is_err());
        assert!(object(br#"{"a":{"b":[1}}"#).is_err());
    }

    #[test]
    fn string_stops_are_found_anywhere() {
        for length in 0..80 {
            let clean = vec![b'a'; length];
            assert_eq!(string_stop(&clean), None);
            for position in 0..length {
                for byte in [0x00, 0x1f, b'\n', b'"', b'\\'] {
                    let mut dirty = clean.clone();
                    dirty[position] = byte;
                    assert_eq!(
                        string_stop(&dirty),
                        Some(position),
                        "{length} {position} {byte}"
                    );
                    // A later stop never hides an earlier one.
                    if position + 1 < length {
                        dirty[position + 1] = b'"';
                        assert_eq!(string_stop(&dirty), Some(position));
                    }
                }
            }
        }
        assert_eq!(string_stop("é ü \u{7f} ~ !#[]".as_bytes()), None);
    }

    #[test]
    fn malformed_documents_are_refused() {
        for bad in [
            &b"{"[..],
            b"{\"a\":1",
            b"{\"a\" 1}",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"{\"a\":1} x",
            b"{\"a\":[1}",
            b"{\"a\":\"x\x01\"}",
            b"{\"a\":\"\\q\"}",
            b"{\"a\":\"\\u12\"}",
            b"{\"a\":tru}",
            b"{\"a\":01}",
            b"{a:1}",
            b"[1]",
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(object(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
