//! Parameter markers for SQL built from a filter, shared by both backends' `filter_sql`:
//! fragments carry numbered markers `?N` for their bound values, and one final pass turns
//! them into plain `?` in text order with the matching parameters. A fragment that is
//! dropped binds nothing and one that is repeated binds twice, so parameters can never get
//! out of step with the text (the class of bug issue 13 found). Each backend renders the
//! plain `?` in its own dialect afterwards.

/// Each marker `?N` in `text` becomes `?` and contributes `params[N - 1]`, in text order. A
/// `?` not followed by the number of a parameter is kept as it is. The generated text holds
/// no other `?`: its only SQL string literals are fixed ones, and every value is bound.
pub(crate) fn resolve<P: Clone>(text: &str, params: &[P]) -> (String, Vec<P>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut bound = Vec::new();
    let (mut i, mut copied) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b'?' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if let Some(v) = text[start..end].parse::<usize>().ok().and_then(|n| params.get(n.wrapping_sub(1))) {
                out.push_str(&text[copied..i]);
                out.push('?');
                bound.push(v.clone());
                copied = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    (out, bound)
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn markers_bind_in_text_order_dropped_ones_bind_nothing_repeated_ones_twice() {
        let params = ["a", "b", "c"];
        assert_eq!(resolve("x = ?2 AND y = ?1", &params), ("x = ? AND y = ?".into(), vec!["b", "a"]));
        assert_eq!(resolve("x = ?3 OR x = ?3", &params), ("x = ? OR x = ?".into(), vec!["c", "c"]));
        assert_eq!(resolve("0", &params), ("0".into(), vec![]));
        assert_eq!(resolve("a ? b ?9 ?", &params), ("a ? b ?9 ?".into(), vec![]));
        assert_eq!(resolve("(?1::text)?12", &params), ("(?::text)?12".into(), vec!["a"]));
    }
}
