//! Which addresses a plugin may not reach unless a rule names them: the
//! host's own machine, its networks and the cloud's metadata service, in
//! every spelling, including IPv4 addresses carried inside IPv6 ones (which a
//! dual-stack socket, a NAT64 gateway or a tunnel turns back into IPv4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused; `None` from [`refused`] means public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    SharedCgnat,
    Multicast,
    Broadcast,
    Metadata,
    Reserved,
    Documentation,
    UniqueLocal,
}

impl Class {
    pub fn describe(self) -> &'static str {
        match self {
            Class::Unspecified => "an unspecified address",
            Class::Loopback => "a loopback address",
            Class::Private => "a private address",
            Class::LinkLocal => "a link-local address",
            Class::SharedCgnat => "a carrier-grade NAT address (100.64.0.0/10)",
            Class::Multicast => "a multicast address",
            Class::Broadcast => "the broadcast address",
            Class::Metadata => "a cloud metadata address",
            Class::Reserved => "a reserved address",
            Class::Documentation => "a documentation address",
            Class::UniqueLocal => "a unique-local IPv6 address",
        }
    }
}

/// How an IPv4 address was carried inside an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    Mapped,
    Compatible,
    Nat64,
    SixToFour,
    Teredo,
}

impl Embedding {
    pub fn describe(self) -> &'static str {
        match self {
            Embedding::Mapped => "IPv4-mapped",
            Embedding::Compatible => "IPv4-compatible",
            Embedding::Nat64 => "NAT64",
            Embedding::SixToFour => "6to4",
            Embedding::Teredo => "Teredo",
        }
    }
}

/// Why `ip` is refused, or `None` when it is a public address. For an IPv6
/// address that carries an IPv4 one, the IPv4 address decides, and the
/// embedding is returned so the message can say which form was used.
pub fn refused(ip: IpAddr) -> Option<(Class, Option<(Embedding, Ipv4Addr)>)> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4).map(|c| (c, None)),
        IpAddr::V6(v6) => {
            if let Some((how, v4)) = embedded_v4(v6) {
                // Any carried address is refused if the IPv4 one would be;
                // a public one passes in its IPv6 form too.
                return v4_class(v4).map(|c| (c, Some((how, v4))));
            }
            v6_class(v6).map(|c| (c, None))
        }
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(169, 254, 170, 2) => Class::Metadata,
        _ if ip.is_unspecified() || a == 0 => Class::Unspecified,
        _ if ip.is_loopback() => Class::Loopback,
        _ if ip.is_private() => Class::Private,
        _ if ip.is_link_local() => Class::LinkLocal,
        _ if a == 100 && (b & 0xc0) == 64 => Class::SharedCgnat,
        _ if ip.is_multicast() => Class::Multicast,
        _ if ip.is_broadcast() => Class::Broadcast,
        _ if ip.is_documentation() => Class::Documentation,
        // 192.0.0.0/24 (IETF protocol assignments), 198.18.0.0/15
        // (benchmarking), 240.0.0.0/4 (reserved).
        _ if (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) || a >= 240 => Class::Reserved,
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<Class> {
    let seg = ip.segments();
    Some(match () {
        // AWS's IPv6 instance metadata endpoint.
        _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => Class::Metadata,
        _ if ip.is_unspecified() => Class::Unspecified,
        _ if ip.is_loopback() => Class::Loopback,
        _ if (seg[0] & 0xfe00) == 0xfc00 => Class::UniqueLocal,
        _ if (seg[0] & 0xffc0) == 0xfe80 || (seg[0] & 0xffc0) == 0xfec0 => Class::LinkLocal,
        _ if ip.is_multicast() => Class::Multicast,
        _ if seg[0] == 0x2001 && seg[1] == 0xdb8 => Class::Documentation,
        // 100::/64 discard-only.
        _ if seg[0] == 0x100 && seg[1..4] == [0, 0, 0] => Class::Reserved,
        _ => return None,
    })
}

/// The IPv4 address an IPv6 one carries, in the forms that reach it.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Embedding, Ipv4Addr)> {
    let seg = ip.segments();
    let o = ip.octets();
    let low32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some((Embedding::Mapped, v4));
    }
    // ::a.b.c.d (deprecated, still routed by some stacks); :: and ::1 are
    // the IPv6 unspecified and loopback addresses, not carried IPv4.
    if seg[..6] == [0; 6] && u32::from(low32) > 1 {
        return Some((Embedding::Compatible, low32));
    }
    // 64:ff9b::/96 (well-known NAT64) and 64:ff9b:1::/48 (local-use NAT64).
    if (seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0]) || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1) {
        return Some((Embedding::Nat64, low32));
    }
    // 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    if seg[0] == 0x2002 {
        return Some((Embedding::SixToFour, Ipv4Addr::new(o[2], o[3], o[4], o[5])));
    }
    // 2001:0::/32: the client's IPv4 is the last 32 bits, inverted.
    if seg[0] == 0x2001 && seg[1] == 0 {
        return Some((Embedding::Teredo, Ipv4Addr::from(!u32::from(low32))));
    }
    None
}

/// "127.0.0.1 (a loopback address)", "[::ffff:127.0.0.1] (the IPv4-mapped
/// form of 127.0.0.1, a loopback address)".
pub fn explain(ip: IpAddr) -> Option<String> {
    let (class, embedded) = refused(ip)?;
    Some(match embedded {
        None => format!("{} is {}", show(ip), class.describe()),
        Some((how, v4)) => format!(
            "{} is the {} form of {v4}, {}",
            show(ip),
            how.describe(),
            class.describe()
        ),
    })
}

pub fn show(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> Option<Class> {
        refused(text.parse().unwrap()).map(|(c, _)| c)
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn host_networks_and_metadata_are_refused() {
        for (ip, want) in [
            ("127.0.0.1", Class::Loopback),
            ("127.255.0.9", Class::Loopback),
            ("::1", Class::Loopback),
            ("0.0.0.0", Class::Unspecified),
            ("::", Class::Unspecified),
            ("10.1.2.3", Class::Private),
            ("172.16.0.1", Class::Private),
            ("192.168.1.1", Class::Private),
            ("169.254.1.1", Class::LinkLocal),
            ("fe80::1", Class::LinkLocal),
            ("100.64.0.1", Class::SharedCgnat),
            ("100.127.255.255", Class::SharedCgnat),
            ("224.0.0.1", Class::Multicast),
            ("ff02::1", Class::Multicast),
            ("255.255.255.255", Class::Broadcast),
            ("169.254.169.254", Class::Metadata),
            ("fd00:ec2::254", Class::Metadata),
            ("fd12:3456::1", Class::UniqueLocal),
            ("240.0.0.1", Class::Reserved),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
        assert_eq!(class("100.128.0.1"), None);
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_by_the_ipv4_address() {
        for (ip, how, v4) in [
            ("::ffff:127.0.0.1", Embedding::Mapped, "127.0.0.1"),
            ("::ffff:169.254.169.254", Embedding::Mapped, "169.254.169.254"),
            ("::127.0.0.1", Embedding::Compatible, "127.0.0.1"),
            ("64:ff9b::7f00:1", Embedding::Nat64, "127.0.0.1"),
            ("64:ff9b:1::a00:1", Embedding::Nat64, "10.0.0.1"),
            ("2002:7f00:1::1", Embedding::SixToFour, "127.0.0.1"),
            ("2002:a9fe:a9fe::", Embedding::SixToFour, "169.254.169.254"),
            // Teredo: 127.0.0.1 inverted is 0x80fffffe.
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Embedding::Teredo, "127.0.0.1"),
        ] {
            let got = refused(ip.parse().unwrap());
            assert_eq!(got.map(|(_, e)| e), Some(Some((how, v4.parse().unwrap()))), "{ip}");
        }
        let text = explain("::ffff:127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(
            text,
            "[::ffff:127.0.0.1] is the IPv4-mapped form of 127.0.0.1, a loopback address"
        );
    }
}
