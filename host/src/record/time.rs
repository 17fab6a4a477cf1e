//! Timestamp text, written by hand: a formatting library costs more per call
//! than the rest of a row's trip, and the NDJSON writer formats three a row.

/// Appends `us` (microseconds since the epoch, UTC) as ISO 8601 with the
/// offset, the way Python's `datetime.isoformat()` writes an aware UTC time:
/// `2024-05-01T12:30:00.123456+00:00`, without the fraction when it is zero.
pub fn write_iso8601_us(us: i64, out: &mut Vec<u8>) {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let mut buf = itoa::Buffer::new();
    let year = buf.format(y);
    for _ in year.len()..4 {
        out.push(b'0');
    }
    out.extend_from_slice(year.as_bytes());
    out.push(b'-');
    two(m, out);
    out.push(b'-');
    two(d, out);
    out.push(b'T');
    two(sod / 3600, out);
    out.push(b':');
    two(sod / 60 % 60, out);
    out.push(b':');
    two(sod % 60, out);
    if micros != 0 {
        out.push(b'.');
        let digits = buf.format(micros);
        for _ in digits.len()..6 {
            out.push(b'0');
        }
        out.extend_from_slice(digits.as_bytes());
    }
    out.extend_from_slice(b"+00:00");
}

fn two(v: u32, out: &mut Vec<u8>) {
    out.push(b'0' + (v / 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(us: i64) -> String {
        let mut out = Vec::new();
        write_iso8601_us(us, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_like_python_isoformat() {
        assert_eq!(fmt(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(fmt(1_714_566_600_123_456), "2024-05-01T12:30:00.123456+00:00");
        assert_eq!(fmt(951_782_400_000_001), "2000-02-29T00:00:00.000001+00:00");
        assert_eq!(fmt(-1), "1969-12-31T23:59:59.999999+00:00");
    }
}
