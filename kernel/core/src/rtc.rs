//! The real-time clock's reading, turned into Unix time: BCD and 12-hour decoding, and the
//! civil-date arithmetic (the days-from-civil algorithm of Howard Hinnant's date library,
//! written here from its description). The register reads are in `arch`.

/// The CMOS clock's registers as read, and how they are encoded (status register B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcReading {
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub day: u8,
    pub month: u8,
    /// Two digits; the century is taken as 20.
    pub year: u8,
    /// Status B bit 2 clear: the registers are BCD.
    pub bcd: bool,
    /// Status B bit 1 clear: 12-hour mode, with bit 7 of the hours meaning PM.
    pub twelve_hour: bool,
}

fn from_bcd(v: u8) -> u64 {
    u64::from((v >> 4) * 10 + (v & 0x0f))
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (i64::from(month) + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

impl RtcReading {
    /// Seconds since the Unix epoch (UTC: the CMOS clock of a PC running QEMU, or Linux, keeps
    /// UTC), or `None` if a field is out of range.
    pub fn unix_seconds(&self) -> Option<u64> {
        let decode = |v: u8| if self.bcd { from_bcd(v) } else { u64::from(v) };
        let pm = self.twelve_hour && self.hours & 0x80 != 0;
        let mut hours = decode(self.hours & 0x7f);
        if self.twelve_hour {
            hours %= 12;
            if pm {
                hours += 12;
            }
        }
        let (seconds, minutes, day, month) = (
            decode(self.seconds),
            decode(self.minutes),
            decode(self.day),
            decode(self.month),
        );
        let year = 2000 + decode(self.year) as i64;
        if seconds > 59
            || minutes > 59
            || hours > 23
            || !(1..=31).contains(&day)
            || !(1..=12).contains(&month)
        {
            return None;
        }
        let days = days_from_civil(year, month as u32, day as u32);
        u64::try_from(days)
            .ok()
            .map(|d| d * 86_400 + hours * 3600 + minutes * 60 + seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 26), 20_783);
        assert_eq!(
            days_from_civil(2024, 2, 29) + 1,
            days_from_civil(2024, 3, 1)
        );
    }

    #[test]
    fn bcd_and_twelve_hour_readings_decode() {
        // 2026-11-26 14:05:09 UTC = 1795701909.
        let bcd = RtcReading {
            seconds: 0x09,
            minutes: 0x05,
            hours: 0x14,
            day: 0x26,
            month: 0x11,
            year: 0x26,
            bcd: true,
            twelve_hour: false,
        };
        assert_eq!(bcd.unix_seconds(), Some(1_795_701_909));
        let binary_pm = RtcReading {
            seconds: 9,
            minutes: 5,
            hours: 0x80 | 2,
            day: 26,
            month: 11,
            year: 26,
            bcd: false,
            twelve_hour: true,
        };
        assert_eq!(binary_pm.unix_seconds(), Some(1_795_701_909));
        let midnight_am = RtcReading {
            hours: 12,
            ..binary_pm
        };
        assert_eq!(midnight_am.unix_seconds(), Some(1_795_701_909 - 14 * 3600));
        let bad = RtcReading {
            month: 13,
            ..binary_pm
        };
        assert_eq!(bad.unix_seconds(), None);
    }
}
