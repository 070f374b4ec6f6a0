//! "Did you mean ...?" for misspelt keys.

/// The candidate closest to `input` by edit distance, if it is close enough to be a
/// plausible typo (at most a third of the input's length, and at least 1).
pub fn nearest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (input.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| {
            (
                distance(&input.to_lowercase(), &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Appends "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`" (or
/// "unknown variant") messages when one of the expected names is close.
pub(crate) fn with_suggestion(message: &str) -> String {
    let unknown = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|start| message.strip_prefix(start));
    let Some(rest) = unknown else {
        return message.to_owned();
    };
    let Some((input, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match nearest(input, candidates) {
        Some(near) => format!("{message}; did you mean `{near}`?"),
        None => message.to_owned(),
    }
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["iggy.address", "iggy.username", "iggy.password"];
        assert_eq!(nearest("iggy.adress", keys), Some("iggy.address"));
        assert_eq!(nearest("iggy.pasword", keys), Some("iggy.password"));
        assert_eq!(nearest("completely.different", keys), None);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(
            with_suggestion("unknown field `topicz`, expected one of `stream`, `topics`, `schema`"),
            "unknown field `topicz`, expected one of `stream`, `topics`, `schema`; did you mean `topics`?"
        );
        assert_eq!(with_suggestion("missing field `x`"), "missing field `x`");
    }
}
