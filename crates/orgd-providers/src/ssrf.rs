//! Address rules for URLs customers give us (webhooks, self-managed GitLab, GitHub Enterprise).
//!
//! A customer-supplied URL must not let a caller reach orgd's own network: loopback, private
//! ranges, the cloud metadata address `169.254.169.254` and the like are refused, for IPv4,
//! IPv6 and IPv4 hidden inside IPv6 (mapped, NAT64, 6to4). The rules apply twice:
//!
//! * **when saving**, [`UrlPolicy::check_url`] parses the URL, checks its shape, resolves the
//!   host (within a time limit) and refuses it if *any* address is not allowed;
//! * **when sending**, the request goes through the guarded client
//!   ([`Client::guarded`](crate::client::Client::guarded)): before each request it checks the
//!   URL's shape and any IP-literal host ([`UrlPolicy::check_before_send`]), and its DNS
//!   resolver applies the address rule inside the connection step, so a name is looked up once
//!   per connection and the address that was checked is the very one connected to: a DNS
//!   answer that changed since saving (DNS rebinding) cannot slip a private address in. That
//!   client follows no redirects and ignores proxy variables (a proxy would resolve the name
//!   itself, out of our sight).
//!
//! Operators loosen the rule with `ORGD_ALLOW_PRIVATE_URLS` ([`PrivateAddresses`]); wherever it
//! allows an address, plain `http` is allowed too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use std::fmt;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Url, redirect};

/// Longest URL accepted, in characters.
pub const MAX_URL_LEN: usize = 2048;
/// How much of a webhook receiver's answer is read; the rest is never downloaded.
pub const WEBHOOK_RESPONSE_CAP: usize = 64 * 1024;
/// Upper bound for establishing a connection, whatever the request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// IPv4 ranges that are not public destinations (RFC 6890 special-purpose registry).
/// `240.0.0.0/4` also covers the broadcast address `255.255.255.255`.
const REFUSED_V4: [Ipv4Net; 15] = [
    v4(0, 0, 0, 0, 8),       // "this network"
    v4(10, 0, 0, 0, 8),      // private
    v4(100, 64, 0, 0, 10),   // shared address space (CGNAT)
    v4(127, 0, 0, 0, 8),     // loopback
    v4(169, 254, 0, 0, 16),  // link-local, incl. cloud metadata 169.254.169.254
    v4(172, 16, 0, 0, 12),   // private
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments
    v4(192, 0, 2, 0, 24),    // documentation (TEST-NET-1)
    v4(192, 88, 99, 0, 24),  // 6to4 relay anycast
    v4(192, 168, 0, 0, 16),  // private
    v4(198, 18, 0, 0, 15),   // benchmarking
    v4(198, 51, 100, 0, 24), // documentation (TEST-NET-2)
    v4(203, 0, 113, 0, 24),  // documentation (TEST-NET-3)
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved and broadcast
];

/// IPv6 ranges that are not public destinations. IPv4-mapped addresses never reach this list
/// (they are turned into IPv4 first); NAT64 and 6to4 addresses are checked here and then by
/// the IPv4 they carry.
const REFUSED_V6: [Ipv6Net; 10] = [
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96), // unspecified, loopback, deprecated IPv4-compatible
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // NAT64 local use: a private translator
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), // discard-only
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), // Teredo: tunnels to any IPv4, unverifiable
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation (RFC 9637)
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), // unique local, incl. AWS IMDS fd00:ec2::254
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // site-local (deprecated)
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), // multicast
];

/// Well-known NAT64 prefix: the IPv4 address is the last 32 bits.
const NAT64: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
/// 6to4: the IPv4 address is bits 16 to 48.
const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// Whether `ip` is a public destination: not in any refused range, after unwrapping
/// IPv4-mapped IPv6 (`::ffff:127.0.0.1` is loopback) and re-checking the IPv4 that NAT64 and
/// 6to4 addresses carry (`2002:c0a8:101::1` is 192.168.1.1).
///
/// Hand-rolled because `IpAddr::is_global` is not stable.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(ip) => !REFUSED_V4.iter().any(|net| net.contains(&ip)),
        IpAddr::V6(ip) => {
            !REFUSED_V6.iter().any(|net| net.contains(&ip))
                && embedded_ipv4(ip).is_none_or(|inner| is_public(IpAddr::V4(inner)))
        }
    }
}

/// The IPv4 address a NAT64 or 6to4 address leads to.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let octets = ip.octets();
    if NAT64.contains(&ip) {
        Some(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ))
    } else if SIX_TO_FOUR.contains(&ip) {
        Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]))
    } else {
        None
    }
}

/// What `ORGD_ALLOW_PRIVATE_URLS` allows beyond public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PrivateAddresses {
    /// Only public addresses, only `https` (the default).
    #[default]
    Refused,
    /// Every address, and `http` too: for tests against loopback fakes.
    Allowed,
    /// Public addresses, plus these ranges (e.g. a self-managed GitLab on a private network),
    /// which may also be reached over `http`.
    AllowedIn(Vec<IpNet>),
}

impl PrivateAddresses {
    /// Reads `false` (or an empty value), `true`, or a comma-separated list of CIDRs; a plain
    /// address counts as a single-address range (/32 or /128).
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("false") {
            return Ok(Self::Refused);
        }
        if value.eq_ignore_ascii_case("true") {
            return Ok(Self::Allowed);
        }
        value
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(parse_range)
            .collect::<Result<Vec<_>, _>>()
            .map(Self::AllowedIn)
    }

    /// Whether the operator explicitly allowed `ip`; such an address may also use `http`.
    fn covers(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self {
            Self::Refused => false,
            Self::Allowed => true,
            Self::AllowedIn(nets) => nets.iter().any(|net| net.contains(&ip)),
        }
    }

    /// Whether `ip` may be connected to over `https`.
    fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.covers(ip)
    }
}

fn parse_range(item: &str) -> Result<IpNet, String> {
    item.parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("{item:?} is neither true, false nor an address range such as 10.0.0.0/8")
        })
}

/// Why a URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlRefusal {
    Malformed,
    TooLong,
    NotHttps,
    Credentials,
    Localhost,
    Unresolvable,
    DnsTimeout,
    PrivateAddress,
}

impl UrlRefusal {
    /// In words fit to show the user (static, so a refusal travels in `Copy` errors).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "the URL is malformed",
            Self::TooLong => "the URL is longer than 2048 characters",
            Self::NotHttps => "the address must use https",
            Self::Credentials => "the URL must not contain credentials",
            Self::Localhost => "the host must not be localhost",
            Self::Unresolvable => "the host does not resolve",
            Self::DnsTimeout => "the host did not resolve in time",
            Self::PrivateAddress => "the host resolves to a private address",
        }
    }
}

impl fmt::Display for UrlRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for UrlRefusal {}

/// The address rules in force: what the operator allows and how long a DNS lookup may take
/// (2 seconds in production).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPolicy {
    /// What `ORGD_ALLOW_PRIVATE_URLS` allows beyond public addresses.
    pub private: PrivateAddresses,
    /// Longest wait for a DNS answer before the host counts as not resolving.
    pub dns_timeout: Duration,
}

/// A URL that passed [`UrlPolicy::check_url`], with the addresses it was checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUrl {
    /// The parsed URL, to send the request to.
    pub url: Url,
    /// Every address the host had when checked (one for an IP literal), port included.
    pub addrs: Vec<SocketAddr>,
}

impl UrlPolicy {
    /// Checks a customer-supplied URL: at most [`MAX_URL_LEN`] characters, well-formed,
    /// `https` (or `http` when every address is explicitly allowed by the operator), no
    /// user name or password, not `localhost`, and every address the host resolves to (or the
    /// literal address) allowed. Call it when saving; before each request, the guarded client
    /// applies [`UrlPolicy::check_before_send`].
    pub async fn check_url(&self, url: &str) -> Result<CheckedUrl, UrlRefusal> {
        if url.chars().count() > MAX_URL_LEN {
            return Err(UrlRefusal::TooLong);
        }
        let url = Url::parse(url).map_err(|_| UrlRefusal::Malformed)?;
        let https = self.check_shape(&url)?;
        let addrs = self.host_addrs(&url).await?;
        for addr in &addrs {
            self.check_addr(addr.ip(), https)?;
        }
        Ok(CheckedUrl { url, addrs })
    }

    /// The same rules just before a request is sent through the guarded client, without a
    /// DNS lookup of its own where the client's resolver applies the rule anyway: the shape,
    /// IP-literal hosts (which no resolver sees), `localhost`. A name is resolved here only
    /// for plain `http` under a list of allowed ranges, which needs every address covered; the
    /// client's resolver then looks again and connects only to allowed addresses.
    pub async fn check_before_send(&self, url: &Url) -> Result<(), UrlRefusal> {
        if url.as_str().chars().count() > MAX_URL_LEN {
            return Err(UrlRefusal::TooLong);
        }
        let https = self.check_shape(url)?;
        let host = url.host_str().ok_or(UrlRefusal::Malformed)?;
        if let Some(ip) = ip_literal(host) {
            return self.check_addr(ip, https);
        }
        if is_localhost(host) {
            return Err(UrlRefusal::Localhost);
        }
        if https || self.private == PrivateAddresses::Allowed {
            return Ok(());
        }
        for addr in self.host_addrs(url).await? {
            self.check_addr(addr.ip(), https)?;
        }
        Ok(())
    }

    /// The scheme (true for `https`; `http` only where the operator allows private addresses)
    /// and the absence of credentials.
    fn check_shape(&self, url: &Url) -> Result<bool, UrlRefusal> {
        let https = match url.scheme() {
            "https" => true,
            "http" if self.private != PrivateAddresses::Refused => false,
            _ => return Err(UrlRefusal::NotHttps),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefusal::Credentials);
        }
        Ok(https)
    }

    /// The addresses behind the URL's host: the literal itself, or the resolved name.
    async fn host_addrs(&self, url: &Url) -> Result<Vec<SocketAddr>, UrlRefusal> {
        let host = url.host_str().ok_or(UrlRefusal::Malformed)?;
        let port = url.port_or_known_default().ok_or(UrlRefusal::Malformed)?;
        if let Some(ip) = ip_literal(host) {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if is_localhost(host) {
            return Err(UrlRefusal::Localhost);
        }
        resolve(host, port, self.dns_timeout).await
    }

    fn check_addr(&self, ip: IpAddr, https: bool) -> Result<(), UrlRefusal> {
        if !self.private.allows(ip) {
            Err(UrlRefusal::PrivateAddress)
        } else if !https && !self.private.covers(ip) {
            Err(UrlRefusal::NotHttps)
        } else {
            Ok(())
        }
    }
}

/// The address in a URL host that is an IP literal (`[::1]` or `127.0.0.1`; the URL parser
/// has already normalised forms such as `2130706433` or `0x7f.1`).
fn ip_literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// `localhost` and its subdomains always mean this machine (RFC 6761), whatever DNS says.
fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Resolves `host` with the system resolver within `limit`; no address is an error.
async fn resolve(host: &str, port: u16, limit: Duration) -> Result<Vec<SocketAddr>, UrlRefusal> {
    let found = tokio::time::timeout(limit, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| UrlRefusal::DnsTimeout)?
        .map_err(|_| UrlRefusal::Unresolvable)?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        Err(UrlRefusal::Unresolvable)
    } else {
        Ok(addrs)
    }
}

/// The DNS resolver of the customer-URL client: it resolves, keeps only allowed addresses and
/// fails when none is left. reqwest calls it inside the connection step and connects only to
/// what it returns, so the checked address is the connected one.
struct CheckedResolver {
    policy: UrlPolicy,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let found = resolve(name.as_str(), 0, policy.dns_timeout).await?;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| policy.private.allows(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(UrlRefusal::PrivateAddress.into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// A client builder for requests to customer-supplied URLs; [`Client::guarded`](crate::client::Client::guarded) builds the
/// one client from it, which also feeds the metrics like every other provider call.
///
/// - DNS goes through `CheckedResolver`: the address rule is applied to the very addresses
///   connected to, so no second, unchecked lookup happens between check and connect.
/// - IP-literal hosts skip any resolver, so URLs must pass [`UrlPolicy::check_before_send`]
///   first (the guarded client does it for every request).
/// - Redirects are not followed (a 3xx is a failed delivery, and could point anywhere).
/// - Proxy variables are ignored: a proxy would resolve names itself, past our resolver.
/// - With the default policy only `https` URLs are sent at all.
/// - `timeout` bounds the whole request; connecting is bounded by at most 5 seconds.
pub(crate) fn client_builder(policy: &UrlPolicy, timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(CheckedResolver {
            policy: policy.clone(),
        }))
        .redirect(redirect::Policy::none())
        .no_proxy()
        .https_only(policy.private == PrivateAddresses::Refused)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
}

/// Reads at most `cap` bytes of a response body (e.g. [`WEBHOOK_RESPONSE_CAP`]), chunk by
/// chunk, whatever `Content-Length` claims; the rest is never downloaded (the connection is
/// dropped with the response), so a receiver cannot make us store or wait for a huge body.
pub(crate) async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < cap {
        let Some(chunk) = response.chunk().await? else {
            break;
        };
        let room = cap - body.len();
        body.extend_from_slice(chunk.get(..room).unwrap_or(&chunk));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn policy(private: PrivateAddresses) -> UrlPolicy {
        UrlPolicy {
            private,
            dns_timeout: Duration::from_secs(2),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn refused_addresses() {
        let refused = [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd00:ec2::254",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "0:0:0:0:0:ffff:7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::808:808",
            "2002:c0a8:0101::1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2001:0::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ];
        for address in refused {
            assert!(!is_public(ip(address)), "{address} must be refused");
        }
    }

    #[test]
    fn public_addresses() {
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.3.1",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "2002:0808:0808::1",
            "2001:4860:4860::8888",
        ];
        for address in public {
            assert!(is_public(ip(address)), "{address} must be allowed");
        }
    }

    #[test]
    fn private_addresses_policy_parses() {
        assert_eq!(PrivateAddresses::default(), PrivateAddresses::Refused);
        assert_eq!(
            PrivateAddresses::parse("false"),
            Ok(PrivateAddresses::Refused)
        );
        assert_eq!(
            PrivateAddresses::parse(" FALSE "),
            Ok(PrivateAddresses::Refused)
        );
        assert_eq!(PrivateAddresses::parse(""), Ok(PrivateAddresses::Refused));
        assert_eq!(
            PrivateAddresses::parse("true"),
            Ok(PrivateAddresses::Allowed)
        );
        assert_eq!(
            PrivateAddresses::parse("True"),
            Ok(PrivateAddresses::Allowed)
        );
        assert_eq!(
            PrivateAddresses::parse("10.1.2.3/8, 192.168.1.5,fd00::/8 ,::1,"),
            Ok(PrivateAddresses::AllowedIn(vec![
                "10.0.0.0/8".parse().unwrap(),
                "192.168.1.5/32".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
                "::1/128".parse().unwrap(),
            ]))
        );
        assert!(PrivateAddresses::parse("yes").is_err());
        assert!(PrivateAddresses::parse("10.0.0.0/33").is_err());
        assert!(PrivateAddresses::parse("10.0.0.0/8,nope").is_err());
    }

    #[test]
    fn allowed_ranges_cover_mapped_addresses() {
        let policy = PrivateAddresses::parse("127.0.0.0/8").unwrap();
        assert!(policy.allows(ip("::ffff:127.0.0.1")));
        assert!(!policy.allows(ip("::1")));
        assert!(!policy.allows(ip("10.0.0.1")));
        assert!(policy.allows(ip("1.1.1.1")));
        assert!(
            !policy.covers(ip("1.1.1.1")),
            "public is not explicitly allowed"
        );
    }

    #[tokio::test]
    async fn refused_urls() {
        let long = format!("https://a.test/{}", "a".repeat(MAX_URL_LEN));
        let cases = [
            ("http://example.com/hook", UrlRefusal::NotHttps),
            ("ftp://example.com/hook", UrlRefusal::NotHttps),
            ("file:///etc/passwd", UrlRefusal::NotHttps),
            ("https://user:pw@example.com/", UrlRefusal::Credentials),
            ("https://user@example.com/", UrlRefusal::Credentials),
            ("https://:pw@example.com/", UrlRefusal::Credentials),
            ("https://localhost/", UrlRefusal::Localhost),
            ("https://LOCALHOST./", UrlRefusal::Localhost),
            ("https://api.localhost:8443/", UrlRefusal::Localhost),
            ("https://127.0.0.1/", UrlRefusal::PrivateAddress),
            ("https://2130706433/", UrlRefusal::PrivateAddress),
            ("https://0x7f.1/", UrlRefusal::PrivateAddress),
            ("https://[::1]/", UrlRefusal::PrivateAddress),
            ("https://[::ffff:7f00:1]/", UrlRefusal::PrivateAddress),
            (
                "https://[0:0:0:0:0:ffff:127.0.0.1]/",
                UrlRefusal::PrivateAddress,
            ),
            (
                "https://169.254.169.254/latest/meta-data/",
                UrlRefusal::PrivateAddress,
            ),
            ("https://[fd00:ec2::254]/", UrlRefusal::PrivateAddress),
            ("https://10.0.0.1:8443/", UrlRefusal::PrivateAddress),
            ("https://[64:ff9b::a00:1]/", UrlRefusal::PrivateAddress),
            (long.as_str(), UrlRefusal::TooLong),
            ("", UrlRefusal::Malformed),
            ("not a url", UrlRefusal::Malformed),
            ("https://", UrlRefusal::Malformed),
            ("https://exa mple.com/", UrlRefusal::Malformed),
            ("https://[::1/", UrlRefusal::Malformed),
            ("https://300.1.1.1/", UrlRefusal::Malformed),
        ];
        let policy = policy(PrivateAddresses::Refused);
        for (url, expected) in cases {
            assert_eq!(policy.check_url(url).await, Err(expected), "{url}");
        }
    }

    #[tokio::test]
    async fn before_sending_literals_are_checked_and_names_left_to_the_resolver() {
        let url = |text: &str| Url::parse(text).unwrap();
        let refused = policy(PrivateAddresses::Refused);
        for (text, expected) in [
            ("https://169.254.169.254/", UrlRefusal::PrivateAddress),
            ("https://[::ffff:7f00:1]/", UrlRefusal::PrivateAddress),
            ("https://localhost/", UrlRefusal::Localhost),
            ("http://1.1.1.1/", UrlRefusal::NotHttps),
            ("https://u:p@1.1.1.1/", UrlRefusal::Credentials),
        ] {
            assert_eq!(refused.check_before_send(&url(text)).await, Err(expected));
        }
        // No lookup here: this name does not resolve, and only the resolver would find out.
        let unresolvable = url(&format!("https://{}.invalid/", "a".repeat(64)));
        assert_eq!(refused.check_before_send(&unresolvable).await, Ok(()));
        assert_eq!(
            refused.check_before_send(&url("https://1.1.1.1/")).await,
            Ok(())
        );
        let allowed = policy(PrivateAddresses::Allowed);
        assert_eq!(
            allowed.check_before_send(&url("http://127.0.0.1:9/")).await,
            Ok(())
        );
        // Plain http to a name under a list of ranges needs its addresses: looked up here.
        let ranges = policy(PrivateAddresses::parse("10.0.0.0/8").unwrap());
        let plain = url(&format!("http://{}.invalid/", "a".repeat(64)));
        assert_eq!(
            ranges.check_before_send(&plain).await,
            Err(UrlRefusal::Unresolvable)
        );
        assert_eq!(ranges.check_before_send(&unresolvable).await, Ok(()));
    }

    #[tokio::test]
    async fn unresolvable_host_is_refused() {
        // A 64-character label is refused by the system resolver before any query is sent.
        let url = format!("https://{}.invalid/", "a".repeat(64));
        let refusal = policy(PrivateAddresses::Refused).check_url(&url).await;
        assert_eq!(refusal, Err(UrlRefusal::Unresolvable));
    }

    #[tokio::test]
    async fn public_literals_pass() {
        let policy = policy(PrivateAddresses::Refused);
        let checked = policy.check_url("https://1.1.1.1/hook?x=1").await.unwrap();
        assert_eq!(checked.addrs, vec!["1.1.1.1:443".parse().unwrap()]);
        assert_eq!(checked.url.as_str(), "https://1.1.1.1/hook?x=1");
        let checked = policy
            .check_url("https://[2606:4700::1111]:8443/")
            .await
            .unwrap();
        assert_eq!(
            checked.addrs,
            vec!["[2606:4700::1111]:8443".parse().unwrap()]
        );
        assert_eq!(
            policy
                .check_url(&format!("https://1.1.1.1/{}", "a".repeat(MAX_URL_LEN - 16)))
                .await
                .map(|c| c.url.as_str().len()),
            Ok(MAX_URL_LEN)
        );
    }

    #[tokio::test]
    async fn allowed_policy_lets_loopback_and_http_through() {
        let policy = policy(PrivateAddresses::Allowed);
        let checked = policy
            .check_url("http://127.0.0.1:8080/hook")
            .await
            .unwrap();
        assert_eq!(checked.addrs, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert!(policy.check_url("https://[::1]:9/").await.is_ok());
        assert_eq!(
            policy.check_url("https://localhost/").await,
            Err(UrlRefusal::Localhost),
            "localhost stays refused by name"
        );
    }

    #[tokio::test]
    async fn allowed_ranges_only_open_those_ranges() {
        let policy = policy(PrivateAddresses::parse("127.0.0.0/8").unwrap());
        assert!(policy.check_url("http://127.0.0.1:8080/").await.is_ok());
        assert!(policy.check_url("https://127.0.0.2/").await.is_ok());
        assert_eq!(
            policy.check_url("https://10.0.0.1/").await,
            Err(UrlRefusal::PrivateAddress)
        );
        assert_eq!(
            policy.check_url("http://10.0.0.1/").await,
            Err(UrlRefusal::PrivateAddress)
        );
        assert_eq!(
            policy.check_url("http://1.1.1.1/").await,
            Err(UrlRefusal::NotHttps),
            "http only where the operator allowed the address"
        );
        assert!(policy.check_url("https://1.1.1.1/").await.is_ok());
    }

    #[test]
    fn refusals_read_as_sentences() {
        assert_eq!(
            UrlRefusal::NotHttps.to_string(),
            "the address must use https"
        );
        assert_eq!(
            UrlRefusal::PrivateAddress.to_string(),
            "the host resolves to a private address"
        );
        assert_eq!(
            UrlRefusal::TooLong.to_string(),
            format!("the URL is longer than {MAX_URL_LEN} characters")
        );
    }

    /// Reads one request head, then answers `head` followed by `body_len` bytes of `x`.
    async fn respond(mut stream: TcpStream, head: String, body_len: usize) {
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            if stream.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
    }

    /// A loopback HTTP server answering every connection with `head` and `body_len` bytes.
    async fn server(head: &str, body_len: usize) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let head = head.to_owned();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(respond(stream, head.clone(), body_len));
            }
        });
        port
    }

    fn client(private: PrivateAddresses) -> reqwest::Client {
        client_builder(&policy(private), Duration::from_secs(10))
            .build()
            .unwrap()
    }

    const OK_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n";

    #[tokio::test]
    async fn resolver_connects_when_allowed() {
        let port = server(OK_HEAD, 2).await;
        for private in [
            PrivateAddresses::Allowed,
            PrivateAddresses::parse("127.0.0.0/8").unwrap(),
        ] {
            let response = client(private)
                .get(format!("http://localhost:{port}/"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.unwrap(), "xx");
        }
    }

    #[tokio::test]
    async fn resolver_refuses_private_names_without_connecting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for private in [
            PrivateAddresses::Refused,
            PrivateAddresses::parse("10.0.0.0/8").unwrap(),
        ] {
            let error = client(private)
                .get(format!("https://localhost:{port}/"))
                .send()
                .await
                .unwrap_err();
            let mut source = error.source();
            let mut refused = false;
            while let Some(cause) = source {
                refused |= cause.downcast_ref::<UrlRefusal>() == Some(&UrlRefusal::PrivateAddress);
                source = cause.source();
            }
            assert!(refused, "{error:?}");
        }
        let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(accepted.is_err(), "no connection may reach the listener");
    }

    #[tokio::test]
    async fn default_client_sends_no_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let error = client(PrivateAddresses::Refused)
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await;
        assert!(error.is_err());
        let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(accepted.is_err());
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let head =
            "HTTP/1.1 301 Moved\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n";
        let port = server(head, 0).await;
        let response = client(PrivateAddresses::Allowed)
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 301);
    }

    #[tokio::test]
    async fn read_capped_stops_at_the_cap() {
        const TEN_MB: usize = 10 * 1024 * 1024;
        let heads = [
            format!("HTTP/1.1 200 OK\r\ncontent-length: {TEN_MB}\r\n\r\n"),
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned(),
        ];
        for head in heads {
            let port = server(&head, TEN_MB).await;
            let mut response = client(PrivateAddresses::Allowed)
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .await
                .unwrap();
            let body = read_capped(&mut response, WEBHOOK_RESPONSE_CAP)
                .await
                .unwrap();
            assert_eq!(body.len(), WEBHOOK_RESPONSE_CAP, "{head}");
            assert!(body.iter().all(|b| *b == b'x'));
        }
    }

    #[tokio::test]
    async fn read_capped_returns_short_bodies_whole() {
        let port = server(OK_HEAD, 2).await;
        let mut response = client(PrivateAddresses::Allowed)
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(read_capped(&mut response, 1).await.unwrap(), b"x");
        let mut response = client(PrivateAddresses::Allowed)
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            read_capped(&mut response, WEBHOOK_RESPONSE_CAP)
                .await
                .unwrap(),
            b"xx"
        );
    }
}
