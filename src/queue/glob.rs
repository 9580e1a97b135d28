//! Queue-name globs: the scope of a credential (`agent-42-*`). Queue-name characters match
//! themselves; `*` matches any run of them, the empty one included. Nothing else is special, so a
//! glob is easy to read and to bound.

/// Longest glob a credential may carry.
pub const MAX_GLOB_BYTES: usize = 128;

/// 1..=[`MAX_GLOB_BYTES`] of `[A-Za-z0-9_.-]` and `*`.
pub fn is_valid_glob(glob: &str) -> bool {
    (1..=MAX_GLOB_BYTES).contains(&glob.len())
        && glob.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*'))
}

/// Whether `name` matches `glob`. Linear in practice, at worst `glob.len() × name.len()` steps
/// (both bounded); no recursion, no allocation.
pub fn glob_matches(glob: &str, name: &str) -> bool {
    if glob == "*" {
        return true;
    }
    let (g, n) = (glob.as_bytes(), name.as_bytes());
    let (mut gi, mut ni) = (0, 0);
    // Where the last `*` was, and where in the name it started matching.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match g.get(gi) {
            Some(b'*') => {
                star = Some((gi, ni));
                gi += 1;
            }
            Some(&c) if Some(&c) == n.get(ni) => {
                gi += 1;
                ni += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and try again after it.
                Some((sg, sn)) => {
                    gi = sg + 1;
                    ni = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    g.get(gi..).is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stars_match_any_run() {
        for (glob, name, want) in [
            ("*", "anything", true),
            ("agent-42-*", "agent-42-inbox", true),
            ("agent-42-*", "agent-42-", true),
            ("agent-42-*", "agent-420-inbox", false),
            ("agent-42-*", "agent-43-inbox", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*-dlq", "jobs-dlq", true),
            ("**", "", true),
        ] {
            assert_eq!(glob_matches(glob, name), want, "{glob} ~ {name}");
        }
        assert!(is_valid_glob("agent-42-*") && !is_valid_glob("a/b") && !is_valid_glob(""));
    }

    proptest! {
        /// The matcher agrees with a plain regular-expression reading of the glob.
        #[test]
        fn agrees_with_the_definition(glob in "[ab*]{1,8}", name in "[ab]{0,10}") {
            fn reference(g: &[u8], n: &[u8]) -> bool {
                match g.split_first() {
                    None => n.is_empty(),
                    Some((b'*', rest)) => (0..=n.len()).any(|i| reference(rest, &n[i..])),
                    Some((c, rest)) => n.first() == Some(c) && reference(rest, &n[1..]),
                }
            }
            prop_assert_eq!(glob_matches(&glob, &name), reference(glob.as_bytes(), name.as_bytes()));
        }
    }
}
