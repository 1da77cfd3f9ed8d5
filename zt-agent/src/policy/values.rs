//! The policy's own value syntax: ports and port ranges, addresses and networks, egress
//! targets, cgroup globs. Each parser returns the message of its problem; the decoder adds
//! the position and field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

use super::model::{DnsName, Target};

pub(super) fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim_start_matches('+').parse::<u16>() {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(format!("invalid port `{s}`: must be an integer 1-65535")),
    }
}

pub fn parse_port_str(s: &str) -> Result<(u16, u16), String> {
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('-') {
        Some((lo, hi)) if digits(lo) && digits(hi) => {
            let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
            if lo > hi {
                return Err(format!(
                    "inverted port range `{s}`: {lo} is greater than {hi}"
                ));
            }
            Ok((lo, hi))
        }
        None if digits(s) => parse_port(s).map(|p| (p, p)),
        _ => Err(format!(
            "invalid port `{s}`: expected a port 1-65535 or a range \"LO-HI\""
        )),
    }
}

/// An `egress.to` entry: a CIDR or a single address, normalised, or a DNS name.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let looks_numeric =
        s.contains(':') || s.contains('/') || s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if looks_numeric {
        parse_net(s).map(Target::Net)
    } else {
        DnsName::parse(s).map(Target::Name)
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    let net = if s.contains('/') {
        let net: IpNet = s.parse().map_err(|_| bad_target(s))?;
        if net.network() != net.addr() {
            let suggestion = normalise(net.trunc());
            return Err(format!("{s} has host bits set; did you mean {suggestion}?"));
        }
        net
    } else {
        let addr: IpAddr = s.parse().map_err(|_| bad_target(s))?;
        IpNet::from(addr)
    };
    Ok(normalise(net))
}

fn bad_target(s: &str) -> String {
    format!("invalid address or CIDR `{s}`")
}

/// IPv4-mapped IPv6 networks become IPv4: the kernel judges v4-mapped destinations as IPv4.
fn normalise(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net
        && n.prefix_len() >= 96
        && let Some(v4) = to_mapped_v4(n.network())
        && let Ok(v4net) = Ipv4Net::new(v4, n.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

fn to_mapped_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    (s[..5] == [0; 5] && s[5] == 0xffff)
        .then(|| a.to_ipv4_mapped())
        .flatten()
}

/// A duration: one or more `<integer><unit>` parts with units `s`, `m`, `h`, `d`
/// (`90s`, `30m`, `1h30m`, `7d`), in seconds. Zero is refused.
///
/// # Errors
/// The text is not such a duration, or it is zero or absurdly long.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid duration `{s}`: expected a number and a unit s, m, h or d, like 90s, 30m, 1h30m or 7d"
        )
    };
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut parts = 0;
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
        parts += 1;
    }
    if !num.is_empty() || parts == 0 {
        return Err(bad());
    }
    if total == 0 {
        return Err(format!("invalid duration `{s}`: must be longer than zero"));
    }
    if total > 366 * 86_400 {
        return Err(format!("invalid duration `{s}`: longer than a year"));
    }
    Ok(total)
}

/// A byte count: an integer with an optional unit B, KB, MB, GB, TB (powers of 1000)
/// or KiB, MiB, GiB, TiB (powers of 1024): `500`, `100MiB`, `2GB`. Zero is refused.
///
/// # Errors
/// The text is not such a size, or it is zero or overflows.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size `{s}`: expected a number and an optional unit B, KB, MB, GB, TB, KiB, MiB, GiB or TiB, like 100MiB"
        )
    };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    let total = n.checked_mul(mult).ok_or_else(bad)?;
    if total == 0 {
        return Err(format!("invalid size `{s}`: must be more than zero"));
    }
    Ok(total)
}

/// A byte count, shortest exact form in binary units (`100MiB`, `1500B`).
#[must_use]
pub fn format_bytes(n: u64) -> String {
    for (unit, name) in [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{}{name}", n / unit);
        }
    }
    format!("{n}B")
}

/// A duration as `parse_duration` reads it, shortest form (`1h30m`, `45s`).
#[must_use]
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if rest >= unit {
            out.push_str(&(rest / unit).to_string());
            out.push(name);
            rest %= unit;
        }
    }
    out
}

/// `HH:MM` or `HH:MM:SS`, seconds after midnight; `24:00` only when `end`.
fn parse_clock(s: &str, end: bool) -> Option<u32> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let h: u32 = parts[0].parse().ok()?;
    let m: u32 = parts[1].parse().ok()?;
    let sec: u32 = parts.get(2).map_or(Some(0), |p| p.parse().ok())?;
    if h == 24 && m == 0 && sec == 0 && end {
        return Some(86_400);
    }
    (h < 24 && m < 60 && sec < 60).then_some(h * 3600 + m * 60 + sec)
}

/// `when[].hours`: `"HH:MM-HH:MM"` (seconds optional, `24:00` as an end); an end at
/// or before the start ends the next day.
pub(super) fn parse_hours(s: &str) -> Result<(u32, u32), String> {
    let bad = || {
        format!(
            "invalid hours `{s}`: expected \"HH:MM-HH:MM\" (24-hour clock, optional :SS, 24:00 as an end)"
        )
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start = parse_clock(a.trim(), false).ok_or_else(bad)?;
    let end = parse_clock(b.trim(), true).ok_or_else(bad)?;
    if start == end || (start == 0 && end == 0) {
        return Err(format!(
            "invalid hours `{s}`: the window is empty; write \"00:00-24:00\" for the whole day"
        ));
    }
    Ok((start, end))
}

/// An IANA time zone name the bundled database knows.
pub(super) fn check_timezone(s: &str) -> Result<(), String> {
    jiff::tz::TimeZone::get(s).map(|_| ()).map_err(|_| {
        format!("unknown time zone `{s}`: expected an IANA name such as Europe/Berlin, or UTC")
    })
}

/// Checks the glob syntax; overlaps between identities are checked in `validate`.
pub(super) fn check_cgroup_glob(glob: &str) -> Result<(), String> {
    if !glob.starts_with('/') {
        return Err("must be an absolute path below the cgroup2 mount, starting with `/`".into());
    }
    if glob.len() > 1 && glob.ends_with('/') {
        return Err("must not end with `/`".into());
    }
    let comps: Vec<&str> = glob[1..].split('/').collect();
    if comps.iter().all(|c| c.is_empty() || *c == "**") {
        return Err("must name at least one cgroup below the root".into());
    }
    // `/*`, `/*/**` and the like claim every top-level cgroup: init.scope (PID 1),
    // system.slice, user.slice. Name the top-level cgroup.
    if comps.first().is_some_and(|c| c.chars().all(|ch| ch == '*')) {
        return Err("the first component must name a cgroup, not only wildcards (it would claim the whole host)".into());
    }
    for c in &comps {
        if c.is_empty() {
            return Err("empty path component (`//`)".into());
        }
        if *c == "." || *c == ".." {
            return Err("`.` and `..` components are not allowed".into());
        }
        if c.contains("**") && *c != "**" {
            return Err("`**` must be a whole path component".into());
        }
        if c.contains(['?', '[', ']', '{', '}', '\\']) {
            return Err("only the wildcards `*` and `**` are supported".into());
        }
        if c.chars().any(char::is_control) {
            return Err("control characters are not allowed".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_net("10.0.0.0/8"),
            Ok("10.0.0.0/8".parse().expect("net"))
        );
        assert_eq!(
            parse_net("127.0.0.1"),
            Ok("127.0.0.1/32".parse().expect("net"))
        );
        assert_eq!(parse_net("::1"), Ok("::1/128".parse().expect("net")));
        assert_eq!(
            parse_net("::ffff:10.0.0.0/104"),
            Ok("10.0.0.0/8".parse().expect("net"))
        );
        assert_eq!(
            parse_net("::ffff:192.168.1.10"),
            Ok("192.168.1.10/32".parse().expect("net"))
        );
        assert_eq!(
            parse_net("::ffff:0:0/96"),
            Ok("0.0.0.0/0".parse().expect("net"))
        );
        // Below /96 the network is wider than the mapped range: stays IPv6.
        assert_eq!(parse_net("::/0"), Ok("::/0".parse().expect("net")));
        assert_eq!(
            parse_net("10.0.0.1/8"),
            Err("10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?".into())
        );
        assert_eq!(
            parse_target("API.openai.com"),
            Ok(Target::Name(
                DnsName::parse("api.openai.com").expect("name")
            ))
        );
        assert!(parse_target("*.githubusercontent.com").is_ok());
        assert!(parse_target("a.*.com").is_err_and(|e| e.contains("first label")));
        assert!(parse_net("10.0.0.0/33").is_err_and(|e| e.contains("invalid address")));
        assert!(parse_net("300.1.1.1").is_err_and(|e| e.contains("invalid address")));
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port_str("8000-8100"), Ok((8000, 8100)));
        assert_eq!(parse_port_str("443"), Ok((443, 443)));
        assert!(parse_port_str("9-1").is_err_and(|e| e.contains("inverted")));
        assert!(parse_port_str("0-10").is_err_and(|e| e.contains("1-65535")));
        assert!(parse_port_str("1-70000").is_err_and(|e| e.contains("1-65535")));
        assert!(parse_port_str("http").is_err());
        assert!(parse_port("0").is_err());
        assert!(parse_port("65536").is_err());
        assert!(parse_port("-5").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("100MiB"), Ok(100 << 20));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("500"), Ok(500));
        assert_eq!(parse_bytes("64KiB"), Ok(65_536));
        for bad in [
            "",
            "0",
            "0MiB",
            "10mb",
            "MiB",
            "1.5GiB",
            "-1",
            "99999999999TiB",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(format_bytes(100 << 20), "100MiB");
        assert_eq!(format_bytes(1500), "1500B");
    }

    #[test]
    fn durations_and_hours() {
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("45s"), Ok(45));
        for bad in ["", "30", "m", "1x", "1h30", "-5m", "0s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(604_800), "7d");
        assert_eq!(parse_hours("08:00-18:00"), Ok((28_800, 64_800)));
        assert_eq!(parse_hours("22:00-06:00"), Ok((79_200, 21_600)));
        assert_eq!(parse_hours("00:00-24:00"), Ok((0, 86_400)));
        assert_eq!(parse_hours("08:00:30-08:01:00"), Ok((28_830, 28_860)));
        for bad in [
            "8-18",
            "08:00",
            "24:00-01:00",
            "08:60-09:00",
            "08:00-08:00",
            "8:00-9:00",
        ] {
            assert!(parse_hours(bad).is_err(), "{bad}");
        }
        assert!(check_timezone("Europe/Berlin").is_ok());
        assert!(check_timezone("UTC").is_ok());
        assert!(check_timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn cgroup_globs() {
        assert!(check_cgroup_glob("/zt/coder/**").is_ok());
        assert!(check_cgroup_glob("/system.slice/telemetry.service").is_ok());
        assert!(check_cgroup_glob("/system.slice/tele*.service").is_ok());
        assert!(check_cgroup_glob("zt/coder").is_err());
        assert!(check_cgroup_glob("/zt//coder").is_err());
        assert!(check_cgroup_glob("/zt/../x").is_err());
        assert!(check_cgroup_glob("/zt/a**").is_err());
        assert!(check_cgroup_glob("/**").is_err());
        assert!(check_cgroup_glob("/").is_err());
        assert!(check_cgroup_glob("/zt/").is_err());
        assert!(check_cgroup_glob("/zt/a?").is_err());
    }
}
