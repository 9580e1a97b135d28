//! Wall-clock time in milliseconds. The engine never reads the clock itself: callers pass `now_ms`,
//! so tests control time instead of sleeping.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time in seconds.
pub fn iso8601(unix_s: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_s as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Unix seconds of an ISO-8601 date-time: `2026-09-01T00:00:00`, an optional fraction (dropped),
/// then nothing (UTC), `Z` or `±HH[:MM]`. Keystone's `expires_at` and Zaqar's `expires` both look
/// like this. `None` for anything else, or a moment before 1970.
pub fn parse_iso8601(text: &str) -> Option<u64> {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let at = time::PrimitiveDateTime::parse(text.get(..19)?, &format).ok()?.assume_utc();
    let mut rest = text.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = frac.get(digits..)?;
    }
    let offset_s: i64 = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let hm = rest.get(1..)?.replace(':', "");
            let (h, m) = (hm.get(..2)?, hm.get(2..).unwrap_or(""));
            let h: i64 = h.parse().ok()?;
            let m: i64 = if m.is_empty() { 0 } else { m.parse().ok()? };
            sign * (h * 3600 + m * 60)
        }
    };
    u64::try_from(at.unix_timestamp() - offset_s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_and_parses_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_iso8601("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_iso8601("2023-11-14T22:13:20.000000Z"), Some(1_700_000_000), "Keystone's form");
        assert_eq!(parse_iso8601("2023-11-14T23:13:20+01:00"), Some(1_700_000_000));
        assert_eq!(parse_iso8601("2023-11-14T22:13:20"), Some(1_700_000_000));
        for bad in ["", "2023-11-14", "2023-11-14T22:13:20Q", "1969-12-31T23:59:59Z", "2023-11-14T22:13:20+x"] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
