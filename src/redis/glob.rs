//! Redis' glob matching (`stringmatchlen` in Redis' util.c), for filtering events in the
//! gateway exactly as SCAN MATCH would filter keys: `*`, `?`, `[abc]`, `[^abc]`, `[a-z]` and
//! `\` escapes, over bytes. Patterns are validated first by [`crate::limits::glob_pattern`].

/// True when `text` matches the glob `pattern`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    match_from(pattern, text, 0)
}

/// Nesting bound for `*` backtracking, as Redis bounds it against pathological patterns.
const MAX_NESTING: usize = 1000;

fn match_from(mut pattern: &[u8], mut text: &[u8], nesting: usize) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    while let Some(&p) = pattern.first() {
        match p {
            b'*' => {
                while pattern.get(1) == Some(&b'*') {
                    pattern = &pattern[1..];
                }
                if pattern.len() == 1 {
                    return true;
                }
                for start in 0..=text.len() {
                    if match_from(&pattern[1..], &text[start..], nesting + 1) {
                        return true;
                    }
                }
                return false;
            }
            b'?' => {
                if text.is_empty() {
                    return false;
                }
                text = &text[1..];
            }
            b'[' => {
                let Some(&c) = text.first() else {
                    return false;
                };
                pattern = &pattern[1..];
                let negate = pattern.first() == Some(&b'^');
                if negate {
                    pattern = &pattern[1..];
                }
                let mut matched = false;
                loop {
                    match pattern {
                        [b'\\', escaped, ..] => {
                            matched |= *escaped == c;
                            pattern = &pattern[2..];
                        }
                        [b']', ..] => break,
                        [] => {
                            // An unterminated class: Redis treats the end as closing it.
                            pattern = b"]";
                            break;
                        }
                        [low, b'-', high, ..] if *high != b']' => {
                            let (low, high) = if low <= high {
                                (*low, *high)
                            } else {
                                (*high, *low)
                            };
                            matched |= (low..=high).contains(&c);
                            pattern = &pattern[3..];
                        }
                        [other, ..] => {
                            matched |= *other == c;
                            pattern = &pattern[1..];
                        }
                    }
                }
                if matched == negate {
                    return false;
                }
                text = &text[1..];
            }
            b'\\' if pattern.len() >= 2 => {
                if text.first() != Some(&pattern[1]) {
                    return false;
                }
                pattern = &pattern[1..];
                text = &text[1..];
            }
            literal => {
                if text.first() != Some(&literal) {
                    return false;
                }
                text = &text[1..];
            }
        }
        pattern = &pattern[1..];
    }
    text.is_empty()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_as_redis_does() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("task:*", "task:1", true),
            ("task:*", "tasks:1", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hallo", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("session:{*}:x", "session:{ab}:x", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                matches(pattern.as_bytes(), text.as_bytes()),
                *expected,
                "{pattern} ~ {text}"
            );
        }
    }
}
