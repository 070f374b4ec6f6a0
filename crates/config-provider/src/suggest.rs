//! "Did you mean ...?" for misspelt keys.

/// The candidate closest to `input` by edit distance, if it is close enough to be a
/// plausible typo (at most a third of the input's length, and at least 1).
pub(crate) fn nearest<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
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
    }
}
