//! Who an API request comes from and what it may do: bearer tokens checked against the
//! config's SHA-256 hashes in constant time, the scope each request needs, and the
//! per-source throttle on failed authentications.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use subtle::ConstantTimeEq;

use crate::config::{ApiToken, Scope};
use crate::protocol::Request;

/// Sources whose failures are remembered at once; beyond it the oldest window is forgotten,
/// so a flood from many addresses costs memory no more than this.
pub const THROTTLE_SOURCES: usize = 4096;

/// How a token starts: secret scanners (GitHub's among them) can be taught the prefix.
pub const TOKEN_PREFIX: &str = "flipdns_";

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer(header: Option<&http::HeaderValue>) -> Option<&[u8]> {
    let value = header?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

/// The configured token `presented` is, if any: its SHA-256 compared with every hash in
/// constant time, so the time taken says nothing about how close a guess came.
pub fn principal<'a>(tokens: &'a [ApiToken], presented: &[u8]) -> Option<&'a ApiToken> {
    let hash = ring::digest::digest(&ring::digest::SHA256, presented);
    let mut found = None;
    for token in tokens {
        if bool::from(token.sha256.ct_eq(hash.as_ref())) {
            found = Some(token);
        }
    }
    found
}

/// The scope `request` needs, as the config spells it.
pub fn needed(request: &Request) -> String {
    match request {
        Request::Version
        | Request::Status { .. }
        | Request::Stragglers { .. }
        | Request::History { .. }
        | Request::Follow { .. } => "read".into(),
        Request::Prepare { service }
        | Request::Flip { service, .. }
        | Request::Rollback { service, .. }
        | Request::Cancel { service } => format!("flip:{service}"),
        Request::Approve { service, .. } => format!("approve:{service}"),
        Request::SetAddresses { service, .. } => format!("deploy:{service}"),
        Request::Reload { .. } | Request::Notify { .. } | Request::LogLevel { .. } => {
            "admin".into()
        }
    }
}

/// Whether `scopes` allow `request`.
pub fn allows(scopes: &[Scope], request: &Request) -> bool {
    scopes.iter().any(|scope| match (scope, request) {
        (Scope::Read, r) => needed(r) == "read",
        (Scope::Admin, r) => needed(r) == "admin",
        (
            Scope::Flip(services),
            Request::Prepare { service }
            | Request::Flip { service, .. }
            | Request::Rollback { service, .. }
            | Request::Cancel { service },
        ) => services.covers(service),
        (Scope::Approve(services), Request::Approve { service, .. }) => services.covers(service),
        (Scope::Deploy(services), Request::SetAddresses { service, .. }) => {
            services.covers(service)
        }
        _ => false,
    })
}

/// A fresh token and its SHA-256: 32 bytes from the system's CSPRNG, base64url.
pub fn new_token() -> Result<(String, [u8; 32]), String> {
    use ring::rand::SecureRandom;
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        data_encoding::BASE64URL_NOPAD.encode(&secret)
    );
    let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hash = <[u8; 32]>::try_from(hash.as_ref()).expect("SHA-256 is 32 bytes");
    Ok((token, hash))
}

/// Failed authentications per source, in one-minute windows: a source over the limit is
/// refused unread until its window ends. IPv6 sources count per /64, the block one host
/// usually holds, so rotating addresses within it gains nothing.
#[derive(Debug, Default)]
pub struct Throttle {
    sources: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    failures: u32,
}

const WINDOW_MS: u64 = 60_000;

impl Throttle {
    /// `Err(seconds to wait)` when `source` has failed `limit` times in its current window.
    pub fn check(&self, source: IpAddr, now_ms: u64, limit: u32) -> Result<(), u64> {
        let sources = self.sources.lock().expect("throttle lock");
        match sources.get(&block(source)) {
            Some(w) if now_ms < w.start_ms + WINDOW_MS && w.failures >= limit => {
                Err((w.start_ms + WINDOW_MS - now_ms).div_ceil(1000))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `source`.
    pub fn failed(&self, source: IpAddr, now_ms: u64) {
        let mut sources = self.sources.lock().expect("throttle lock");
        if sources.len() >= THROTTLE_SOURCES && !sources.contains_key(&block(source)) {
            sources.retain(|_, w| now_ms < w.start_ms + WINDOW_MS);
            if sources.len() >= THROTTLE_SOURCES
                && let Some(oldest) = sources
                    .iter()
                    .min_by_key(|(_, w)| w.start_ms)
                    .map(|(a, _)| *a)
            {
                sources.remove(&oldest);
            }
        }
        let window = sources.entry(block(source)).or_insert(Window {
            start_ms: now_ms,
            failures: 0,
        });
        if now_ms >= window.start_ms + WINDOW_MS {
            *window = Window {
                start_ms: now_ms,
                failures: 0,
            };
        }
        window.failures += 1;
    }
}

/// The address a source is counted under: itself, or its /64 for IPv6.
fn block(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Services;

    fn token(name: &str, secret: &str, scopes: Vec<Scope>) -> ApiToken {
        let hash = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        ApiToken {
            name: name.into(),
            sha256: hash.as_ref().try_into().unwrap(),
            scopes,
            line: 1,
        }
    }

    #[test]
    fn a_token_is_found_by_its_hash_only() {
        let tokens = [
            token("ci", "s3cret", vec![Scope::Read]),
            token("ops", "other", vec![Scope::Admin]),
        ];
        assert_eq!(principal(&tokens, b"s3cret").map(|t| &*t.name), Some("ci"));
        assert_eq!(principal(&tokens, b"other").map(|t| &*t.name), Some("ops"));
        assert!(principal(&tokens, b"s3cre").is_none());
        assert!(principal(&tokens, b"").is_none());
        let header = http::HeaderValue::from_static("Bearer  s3cret ");
        assert_eq!(bearer(Some(&header)), Some(&b"s3cret"[..]));
        let basic = http::HeaderValue::from_static("Basic czNjcmV0");
        assert_eq!(bearer(Some(&basic)), None);
        let (fresh, hash) = new_token().unwrap();
        assert!(fresh.starts_with(TOKEN_PREFIX) && fresh.len() == TOKEN_PREFIX.len() + 43);
        let ours = [ApiToken {
            sha256: hash,
            ..token("new", "", vec![])
        }];
        assert!(principal(&ours, fresh.as_bytes()).is_some());
    }

    #[test]
    fn scopes_cover_exactly_their_requests() {
        let flip = |s: &str| Request::Flip {
            service: s.into(),
            to: crate::color::Color::Green,
            now: false,
            force: false,
            wait: true,
            wait_secondaries: true,
        };
        let app = Services::One("app".into());
        assert!(allows(&[Scope::Flip(app.clone())], &flip("app")));
        assert!(!allows(&[Scope::Flip(app.clone())], &flip("web")));
        assert!(allows(&[Scope::Flip(Services::All)], &flip("web")));
        assert!(!allows(&[Scope::Read], &flip("app")));
        assert!(!allows(&[Scope::Admin], &flip("app")));
        assert!(!allows(&[Scope::Approve(app.clone())], &flip("app")));
        let approve = Request::Approve {
            service: "app".into(),
            wait: false,
        };
        assert!(allows(&[Scope::Approve(app.clone())], &approve));
        assert!(!allows(&[Scope::Flip(app.clone())], &approve));
        assert!(allows(&[Scope::Read], &Request::Status { service: None }));
        assert!(!allows(
            &[Scope::Flip(Services::All)],
            &Request::Reload { force: false }
        ));
        assert_eq!(needed(&flip("app")), "flip:app");
    }

    #[test]
    fn a_source_over_the_limit_waits_for_its_window() {
        let throttle = Throttle::default();
        let source: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(throttle.check(source, 1_000, 3), Ok(()));
            throttle.failed(source, 1_000);
        }
        assert_eq!(throttle.check(source, 1_000, 3), Err(60));
        assert_eq!(throttle.check(source, 60_999, 3), Err(1));
        assert_eq!(throttle.check(source, 61_000, 3), Ok(()));
        // Another address of the same /64 is the same source; another /64 is not.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let c: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        throttle.failed(a, 0);
        assert_eq!(throttle.check(b, 0, 1), Err(60));
        assert_eq!(throttle.check(c, 0, 1), Ok(()));
        // Bounded: a flood of sources forgets the oldest.
        for i in 0..(THROTTLE_SOURCES as u32 + 10) {
            throttle.failed(IpAddr::V4((0x0a00_0000 + i).into()), 100 + u64::from(i));
        }
        assert!(throttle.sources.lock().unwrap().len() <= THROTTLE_SOURCES);
    }
}
