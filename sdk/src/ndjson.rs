/// The rows of an NDJSON batch, one JSON object text each; blank lines (the
/// trailing newline, a `\r\n` line end) are skipped.
pub fn ndjson_rows(batch: &str) -> impl Iterator<Item = &str> {
    batch
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_rows_and_skips_blank_lines() {
        let rows: Vec<_> = ndjson_rows("{\"a\":1}\r\n\n{\"a\":\"x\\ny\"}\n").collect();
        assert_eq!(rows, ["{\"a\":1}", "{\"a\":\"x\\ny\"}"]);
        assert_eq!(ndjson_rows("").count(), 0);
    }
}
