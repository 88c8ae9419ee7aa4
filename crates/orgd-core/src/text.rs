//! Cutting text on character boundaries.

/// The last at most `max` bytes of `s`, starting on a character boundary.
pub fn utf8_tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The first at most `max` bytes of `s`, ending on a character boundary.
pub fn utf8_head(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_cuts() {
        assert_eq!(utf8_tail("aé", 1), "");
        assert_eq!(utf8_tail("aé", 2), "é");
        assert_eq!(utf8_tail("abc", 10), "abc");
        assert_eq!(utf8_head("éa", 1), "");
        assert_eq!(utf8_head("éa", 3), "éa");
    }
}
