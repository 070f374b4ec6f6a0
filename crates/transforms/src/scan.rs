//! A fast scanner for the top level of a JSON object: it finds each key and value span
//! without building anything, so a transform that reads a few fields of a large
//! document does not pay for parsing the rest.
//!
//! What it checks: the top-level structure (`{ "key": value, ... }` and nothing after
//! it), that every string is free of raw control characters and with valid escape
//! sequences (the whole document is checked for UTF-8 once), that brackets nest, and that scalars are JSON literals. Nested values are
//! parsed fully only when a transform reads them.

use memchr::memchr2;

/// `(key span, key has escapes, value span)` of each top-level field.
pub(crate) type Spans = Vec<((usize, usize), bool, (usize, usize))>;

/// Whether any byte is below 0x20, eight bytes at a time: a byte `b` of `word` is below
/// 0x20 exactly when `b - 0x20` borrows into its high bit while `b`'s own high bit is
/// clear.
fn has_control(bytes: &[u8]) -> bool {
    const LOW: u64 = 0x2020_2020_2020_2020;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let word = u64::from_le_bytes(eight);
        if word.wrapping_sub(LOW) & !word & HIGH != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|byte| *byte < 0x20)
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
            let Some(offset) = memchr2(b'"', b'\\', &self.bytes[self.at..]) else {
                return Err(self.error("unterminated string"));
            };
            if has_control(&self.bytes[self.at..self.at + offset]) {
                return Err(self.error("control character in a string"));
            }
            self.at += offset;
            if self.bytes[self.at] == b'"' {
                let span = (start, self.at);
                self.at += 1;
                return Ok((span, escaped));
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
                let token = &self.bytes[self.at..end];
                if serde_json::from_slice::<serde::de::IgnoredAny>(token).is_err() {
                    return Err(self.error("not a JSON value"));
                }
                self.at = end;
            }
            None => return Err(self.error("a value is missing")),
        }
        Ok((start, self.at))
    }

    /// Skips an object or array, checking that brackets nest and strings are sound.
    fn nested(&mut self) -> Result<(), String> {
        let mut stack = Vec::with_capacity(8);
        loop {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(self.error("unterminated object or array"));
            };
            match byte {
                b'{' | b'[' => {
                    stack.push(if byte == b'{' { b'}' } else { b']' });
                    self.at += 1;
                }
                b'}' | b']' => {
                    if stack.pop() != Some(byte) {
                        return Err(self.error("brackets do not match"));
                    }
                    self.at += 1;
                    if stack.is_empty() {
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
    if let Err(error) = std::str::from_utf8(bytes) {
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
    fn control_bytes_are_found_anywhere() {
        for length in 0..40 {
            let clean = vec![b'a'; length];
            assert!(!has_control(&clean));
            for position in 0..length {
                for byte in [0x00, 0x1f, b'\n'] {
                    let mut dirty = clean.clone();
                    dirty[position] = byte;
                    assert!(has_control(&dirty), "{length} {position} {byte}");
                }
            }
        }
        assert!(!has_control("é ü \u{7f} ~".as_bytes()));
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
