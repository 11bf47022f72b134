//! `cron`: `desiredReplicas` inside a window between two cron schedules, in an IANA time zone.
//!
//! Schedules are parsed as KEDA's parser (robfig/cron's standard five fields: minute, hour, day
//! of month, month, day of week) parses them: `*` and `?`, lists, ranges, steps, month and
//! weekday names, an optional `TZ=`/`CRON_TZ=` prefix; no `@` descriptors. Day of month and day
//! of week combine with OR when both are restricted, AND when either is `*`.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::error::ErrorKind;
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::trigger::Common;

/// A parsed five-field schedule.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Schedule {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
    zone: Option<String>,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

impl Schedule {
    pub fn parse(spec: &str) -> Result<Schedule, CronError> {
        let mut spec = spec.trim();
        let mut zone = None;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let eq = spec.find('=').unwrap_or(0);
            let space = spec
                .find(char::is_whitespace)
                .ok_or(CronError::BadLocation)?;
            let name = &spec[eq + 1..space];
            load_zone(name)?;
            zone = Some(name.to_owned());
            spec = spec[space..].trim();
        }
        if spec.starts_with('@') {
            return Err(CronError::Descriptor(spec.to_owned()));
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::FieldCount(fields.len(), spec.to_owned()));
        }
        let (minute, _) = field(fields[0], &MINUTES)?;
        let (hour, _) = field(fields[1], &HOURS)?;
        let (dom, dom_star) = field(fields[2], &DOM)?;
        let (month, _) = field(fields[3], &MONTHS)?;
        let (dow, dow_star) = field(fields[4], &DOW)?;
        Ok(Schedule {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
            zone,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.dom & (1 << date.day()) != 0;
        let dow = self.dow & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time the schedule fires strictly after `after` (at a whole minute), searching
    /// five years ahead.
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let own;
        let zone = match &self.zone {
            Some(name) => {
                own = load_zone(name).ok()?;
                &own
            }
            None => zone,
        };
        let start = after.to_zoned(zone.clone());
        let mut date = start.date();
        for _ in 0..(366 * 5 + 1) {
            if self.month & (1 << date.month()) != 0 && self.day_matches(date) {
                for h in 0..24u8 {
                    if self.hour & (1 << h) == 0 {
                        continue;
                    }
                    for m in 0..60u8 {
                        if self.minute & (1 << m) == 0 {
                            continue;
                        }
                        let Ok(time) = Time::new(h as i8, m as i8, 0, 0) else {
                            continue;
                        };
                        let Ok(zoned) = zone.to_zoned(DateTime::from_parts(date, time)) else {
                            continue;
                        };
                        let ts = zoned.timestamp();
                        if ts > after {
                            return Some(ts);
                        }
                    }
                }
            }
            date = date.checked_add(1.day()).ok()?;
        }
        None
    }
}

fn field(text: &str, b: &Bounds) -> Result<(u64, bool), CronError> {
    let mut bits = 0u64;
    let mut star = false;
    for expr in text.split(',') {
        let (range_bits, range_star) = range(expr, b)?;
        bits |= range_bits;
        star |= range_star;
    }
    Ok((bits, star))
}

fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), CronError> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end, mut star) = if low_high[0] == "*" || low_high[0] == "?" {
        (b.min, b.max, true)
    } else {
        let start = int_or_name(low_high[0], b)?;
        let end = match low_high.len() {
            1 => start,
            2 => int_or_name(low_high[1], b)?,
            _ => return Err(CronError::Hyphens(expr.to_owned())),
        };
        (start, end, false)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = number(range_and_step[1])?;
            if single {
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(CronError::Slashes(expr.to_owned())),
    };
    let expr = || expr.to_owned();
    if start < b.min {
        return Err(CronError::BelowMinimum(start, b.min, expr()));
    }
    if end > b.max {
        return Err(CronError::AboveMaximum(end, b.max, expr()));
    }
    if start > end {
        return Err(CronError::Backwards(start, end, expr()));
    }
    if step == 0 {
        return Err(CronError::ZeroStep(expr()));
    }
    let mut bits = 0u64;
    let mut i = start;
    while i <= end {
        bits |= 1 << i;
        i += step;
    }
    Ok((bits, star))
}

fn int_or_name(text: &str, b: &Bounds) -> Result<u32, CronError> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    number(text)
}

fn number(text: &str) -> Result<u32, CronError> {
    match text.parse::<i64>() {
        Ok(n) if n < 0 => Err(CronError::Negative(n, text.to_owned())),
        Ok(n) => u32::try_from(n).map_err(|_| CronError::TooLarge(text.to_owned())),
        Err(_) => Err(CronError::NotANumber(text.to_owned())),
    }
}

/// Loads an IANA time zone (`UTC` and `Local` included).
pub(crate) fn load_zone(name: &str) -> Result<TimeZone, CronError> {
    match name {
        "" | "UTC" => Ok(TimeZone::UTC),
        "Local" => Ok(TimeZone::system()),
        other => TimeZone::get(other).map_err(|_| CronError::UnknownZone(other.to_owned())),
    }
}

/// Why a cron schedule or time zone cannot be read (the messages of the cron parser KEDA uses,
/// robfig/cron).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CronError {
    /// `TZ=` without a schedule after it.
    #[error("provided bad location")]
    BadLocation,
    /// Not an IANA zone name.
    #[error("unknown time zone {0:?}")]
    UnknownZone(String),
    /// `@hourly` and friends.
    #[error("descriptors such as {0:?} are not accepted; use five fields")]
    Descriptor(String),
    /// Not five fields (how many, the schedule).
    #[error("expected exactly 5 fields, found {0}: {1:?}")]
    FieldCount(usize, String),
    /// `1-2-3`.
    #[error("too many hyphens: {0}")]
    Hyphens(String),
    /// `1/2/3`.
    #[error("too many slashes: {0}")]
    Slashes(String),
    /// A range starting below the field's minimum.
    #[error("beginning of range ({0}) below minimum ({1}): {2}")]
    BelowMinimum(u32, u32, String),
    /// A range ending above the field's maximum.
    #[error("end of range ({0}) above maximum ({1}): {2}")]
    AboveMaximum(u32, u32, String),
    /// A range whose start is after its end.
    #[error("beginning of range ({0}) beyond end of range ({1}): {2}")]
    Backwards(u32, u32, String),
    /// A step of 0.
    #[error("step of range should be a positive number: {0}")]
    ZeroStep(String),
    /// A negative number.
    #[error("negative number ({0}) not allowed: {1}")]
    Negative(i64, String),
    /// A number beyond 32 bits.
    #[error("number too large: {0}")]
    TooLarge(String),
    /// Not a number nor a month or day name.
    #[error("failed to parse int from {0:?}")]
    NotANumber(String),
}

/// A `cron` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    timezone: String,
    zone: TimeZone,
    start_text: String,
    end_text: String,
    start: Schedule,
    end: Schedule,
    desired_replicas: i64,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let start_text = p.req_str(&["start"], META);
    let end_text = p.req_str(&["end"], META);
    let timezone = p.req_str(&["timezone"], META);
    let desired_replicas = p.req_i64("desiredReplicas", META);
    let parse_schedule = |p: &mut Params<'_>, name: &str, text: &str| {
        if text.is_empty() {
            return None;
        }
        match Schedule::parse(text) {
            Ok(s) => Some(s),
            Err(e) => {
                p.fail_param(
                    ErrorKind::Config,
                    name,
                    META,
                    format!("error parsing {name} schedule: {e}"),
                );
                None
            }
        }
    };
    let start = parse_schedule(p, "start", &start_text);
    let end = parse_schedule(p, "end", &end_text);
    if !start_text.is_empty() && start_text == end_text {
        p.fail_param(
            ErrorKind::Config,
            "end",
            META,
            "start and end can not have exactly same time input",
        );
    }
    if p.lookup(&["desiredReplicas"], META).is_some() && desired_replicas == 0 {
        p.fail_param(
            ErrorKind::Config,
            "desiredReplicas",
            META,
            "no desiredReplicas specified (must not be 0)",
        );
    }
    let zone = if timezone.is_empty() {
        TimeZone::UTC
    } else {
        match load_zone(&timezone) {
            Ok(z) => z,
            Err(e) => {
                p.fail_param(ErrorKind::Config, "timezone", META, e.to_string());
                TimeZone::UTC
            }
        }
    };
    let never = |s: &Option<Schedule>| {
        s.as_ref()
            .is_some_and(|s| s.next_after(Timestamp::now(), &zone).is_none())
    };
    if never(&start) {
        p.fail_param(
            ErrorKind::Config,
            "start",
            META,
            "the start schedule never fires",
        );
    }
    if never(&end) {
        p.fail_param(
            ErrorKind::Config,
            "end",
            META,
            "the end schedule never fires",
        );
    }
    let empty = || Schedule {
        minute: 0,
        hour: 0,
        dom: 0,
        month: 0,
        dow: 0,
        dom_star: false,
        dow_star: false,
        zone: None,
    };
    Config {
        timezone,
        zone,
        start: start.unwrap_or_else(empty),
        end: end.unwrap_or_else(empty),
        start_text,
        end_text,
        desired_replicas,
    }
}

/// KEDA's `parseCronTimeFormat` for metric names.
fn cron_name(s: &str) -> String {
    s.replace(' ', "")
        .replace('*', "x")
        .replace('/', "Sl")
        .replace('?', "Qm")
        .replace(',', "Cm")
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!(
                    "cron-{}-{}-{}",
                    self.timezone,
                    cron_name(&self.start_text),
                    cron_name(&self.end_text)
                )),
            ),
            common.metric_type.clone(),
            1.0,
        ))]
    }

    /// Whether `now` falls inside the window: the next end comes no later than the next start.
    pub fn in_window(&self, now: Timestamp) -> Option<bool> {
        let next_start = self.start.next_after(now, &self.zone)?;
        let next_end = self.end.next_after(now, &self.zone)?;
        Some(next_start >= next_end)
    }
}

/// A built `cron` trigger.
pub(crate) struct CronScaler {
    config: Config,
}

impl CronScaler {
    pub fn new(config: Config) -> Self {
        CronScaler { config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let inside = self
            .config
            .in_window(Timestamp::now())
            .ok_or_else(|| common.error(ErrorKind::Config, "the schedule never fires"))?;
        // Outside the window KEDA's `GetMetricsAndActivity` reports 0 and inactive.
        let value = if inside {
            self.config.desired_replicas as f64
        } else {
            0.0
        };
        Ok(Poll::one(common.name(metric), value, inside))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str, zone: &str) -> Timestamp {
        let tz = load_zone(zone).unwrap();
        tz.to_zoned(s.parse::<DateTime>().unwrap())
            .unwrap()
            .timestamp()
    }

    #[test]
    fn fields_parse_like_robfig() {
        let s = Schedule::parse("*/15 9-17 * JAN,jun mon-fri").unwrap();
        assert_eq!(s.minute, (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(s.month, (1 << 1) | (1 << 6));
        assert!(s.dom_star && !s.dow_star);
        assert!(Schedule::parse("5/20 * * * *").unwrap().minute & (1 << 45) != 0);
        let s = |t: &str| t.to_owned();
        for (bad, why) in [
            ("* * * *", CronError::FieldCount(4, s("* * * *"))),
            ("@daily", CronError::Descriptor(s("@daily"))),
            ("60 * * * *", CronError::AboveMaximum(60, 59, s("60"))),
            ("* * * * 7", CronError::AboveMaximum(7, 6, s("7"))),
            ("5-1 * * * *", CronError::Backwards(5, 1, s("5-1"))),
            ("*/0 * * * *", CronError::ZeroStep(s("*/0"))),
            ("a * * * *", CronError::NotANumber(s("a"))),
            // "-1" splits at its hyphen into an empty start.
            ("-1 * * * *", CronError::NotANumber(s(""))),
            ("1-2-3 * * * *", CronError::Hyphens(s("1-2-3"))),
            ("1/2/3 * * * *", CronError::Slashes(s("1/2/3"))),
            ("TZ=Asia/Tokyo", CronError::BadLocation),
        ] {
            assert_eq!(Schedule::parse(bad).err(), Some(why), "{bad}");
        }
        assert!(Schedule::parse("TZ=Asia/Tokyo 0 6 * * *").is_ok());
        assert!(Schedule::parse("TZ=Nowhere/City 0 6 * * *").is_err());
    }

    #[test]
    fn next_occurrences_follow_the_zone() {
        let s = Schedule::parse("0 6 * * *").unwrap();
        let tz = load_zone("Asia/Kolkata").unwrap();
        let next = s
            .next_after(at("2026-03-10T05:59:30", "Asia/Kolkata"), &tz)
            .unwrap();
        assert_eq!(next, at("2026-03-10T06:00:00", "Asia/Kolkata"));
        let next = s
            .next_after(at("2026-03-10T06:00:00", "Asia/Kolkata"), &tz)
            .unwrap();
        assert_eq!(
            next,
            at("2026-03-11T06:00:00", "Asia/Kolkata"),
            "strictly after"
        );
        // Both day fields restricted: either matches (the 13th, or a Friday).
        let s = Schedule::parse("0 0 13 * 5").unwrap();
        let utc = TimeZone::UTC;
        let next = s
            .next_after(at("2026-02-01T00:00:00", "UTC"), &utc)
            .unwrap();
        assert_eq!(next, at("2026-02-06T00:00:00", "UTC"));
        // February 30th never comes.
        assert_eq!(
            Schedule::parse("0 0 30 2 *")
                .unwrap()
                .next_after(Timestamp::now(), &utc),
            None
        );
    }

    #[test]
    fn windows_open_between_start_and_end() {
        let cfg = |start: &str, end: &str, tz: &str| Config {
            timezone: tz.into(),
            zone: load_zone(tz).unwrap(),
            start_text: start.into(),
            end_text: end.into(),
            start: Schedule::parse(start).unwrap(),
            end: Schedule::parse(end).unwrap(),
            desired_replicas: 10,
        };
        let office = cfg("0 6 * * *", "0 20 * * *", "Asia/Kolkata");
        assert_eq!(
            office.in_window(at("2026-05-04T12:00:00", "Asia/Kolkata")),
            Some(true)
        );
        assert_eq!(
            office.in_window(at("2026-05-04T05:00:00", "Asia/Kolkata")),
            Some(false)
        );
        assert_eq!(
            office.in_window(at("2026-05-04T21:00:00", "Asia/Kolkata")),
            Some(false)
        );
        assert_eq!(
            office.in_window(at("2026-05-04T06:00:00", "Asia/Kolkata")),
            Some(true)
        );
        // The same instant is outside in another zone.
        let utc = cfg("0 6 * * *", "0 20 * * *", "UTC");
        assert_eq!(
            utc.in_window(at("2026-05-04T05:00:00", "Asia/Kolkata")),
            Some(false)
        );
        // A window across midnight.
        let night = cfg("0 22 * * *", "0 4 * * *", "Europe/Berlin");
        assert_eq!(
            night.in_window(at("2026-05-04T23:30:00", "Europe/Berlin")),
            Some(true)
        );
        assert_eq!(
            night.in_window(at("2026-05-05T03:59:00", "Europe/Berlin")),
            Some(true)
        );
        assert_eq!(
            night.in_window(at("2026-05-05T12:00:00", "Europe/Berlin")),
            Some(false)
        );
    }

    #[test]
    fn metric_names_escape_cron_syntax() {
        assert_eq!(cron_name("0,30 */2 ? * *"), "0Cm30xSl2Qmxx");
    }
}
