//! A secondary's answer, read from its dnstap frame, as an observation for the ledger.
//!
//! The color, TTL and time come from the response itself, never from when the frame
//! arrived: a secondary that still serves the old color gave the old color, and that is a
//! lagging secondary, not a straggling resolver. The question name is looked up in the
//! snapshot as a query would be; the color of an answer to a service name is the one whose
//! addresses it holds (or, in CNAME mode, the color name it points to). A service-name
//! answer with a TTL above the cutover TTL also feeds the drain input, like one given here.

use std::net::IpAddr;

use super::message::{AUTH_RESPONSE, CLIENT_RESPONSE, Dnstap, TYPE_MESSAGE};
use crate::clock::Clock;
use crate::color::Color;
use crate::config::ServiceConfig;
use crate::dns::response::{self, TYPE_CNAME};
use crate::observed::answers::{NameKind, Observation};
use crate::records::{Hit, Lookup, ServiceView, Snapshot};
use crate::state::Phase;
use crate::wire::MAX_NAME_LEN;

/// Why a frame gave no observation; counted per sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Not an authoritative response (a query, a resolver's message...).
    NotAnAnswer = 0,
    /// No time, client address or response message, or one that cannot be read.
    Malformed = 1,
    /// An answer about something other than a service's names (or an error, or no data).
    OtherName = 2,
    /// A service-name answer whose addresses are neither color's (the config changed).
    UnknownAddress = 3,
}

impl Skipped {
    pub const ALL: [Skipped; 4] = [
        Skipped::NotAnAnswer,
        Skipped::Malformed,
        Skipped::OtherName,
        Skipped::UnknownAddress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::NotAnAnswer => "not_an_answer",
            Skipped::Malformed => "malformed",
            Skipped::OtherName => "other_name",
            Skipped::UnknownAddress => "unknown_address",
        }
    }
}

/// What a frame told: an answer for the ledger, and, when it was a normal-TTL answer that
/// expires after the drain deadline its service is preparing for, that service's name (the
/// deadline must be written again, later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told {
    pub observation: Observation,
    pub moves_drain: Option<String>,
}

/// What `frame`, from the secondary with ledger id `via`, told.
pub fn observation(
    frame: &Dnstap,
    snapshot: &Snapshot,
    clock: &Clock,
    via: u8,
) -> Result<Told, Skipped> {
    let message = match (&frame.message, frame.r#type) {
        (Some(m), Some(TYPE_MESSAGE) | None) => m,
        _ => return Err(Skipped::NotAnAnswer),
    };
    if !matches!(message.r#type, Some(AUTH_RESPONSE | CLIENT_RESPONSE)) {
        return Err(Skipped::NotAnAnswer);
    }
    let resolver = match message.query_address.as_deref() {
        Some(a) if a.len() == 4 => IpAddr::from(<[u8; 4]>::try_from(a).expect("4 bytes")),
        Some(a) if a.len() == 16 => IpAddr::from(<[u8; 16]>::try_from(a).expect("16 bytes")),
        _ => return Err(Skipped::Malformed),
    };
    let answered_ms = message.answered_ms().ok_or(Skipped::Malformed)?;
    let bytes = message
        .response_message
        .as_deref()
        .ok_or(Skipped::Malformed)?;
    let response = response::parse(bytes).ok_or(Skipped::Malformed)?;
    if response.rcode != 0 {
        return Err(Skipped::OtherName);
    }
    let mut name = [0u8; MAX_NAME_LEN];
    let name = &mut name[..response.qname.len()];
    for (lower, byte) in name.iter_mut().zip(response.qname) {
        *lower = byte.to_ascii_lowercase();
    }
    let Lookup::Node(node) = snapshot.lookup(name) else {
        return Err(Skipped::OtherName);
    };
    let hit = node.answer(response.qtype).hit.ok_or(Skipped::OtherName)?;
    let view = &snapshot.services[hit.index as usize];
    let config = &snapshot.catalog.config.services[hit.index as usize];
    let (color, ttl) = given(&response, hit, view, config)?;
    let at_ms = clock.mono_of(answered_ms);
    let mut moves_drain = None;
    if hit.name == NameKind::Service && ttl > config.cutover_ttl {
        // A long answer a secondary gave delays the drain like one given here (I1).
        let expiry = at_ms + u64::from(ttl) * 1000;
        view.observed.long_answer(expiry);
        if let Phase::Preparing { held, .. } = view.state.phase
            && held.is_none_or(|h| expiry > h.mono_ms)
        {
            moves_drain = Some(view.name.clone());
        }
    }
    let observation = Observation {
        at_ms,
        resolver,
        subnet: response.client_subnet,
        service: view.id,
        color,
        name: hit.name,
        ttl,
        flip_tag: 0,
        via,
    };
    Ok(Told {
        observation,
        moves_drain,
    })
}
/// The color and TTL `response` gave for the service name or color name `hit` found.
fn given(
    response: &response::Response<'_>,
    hit: Hit,
    view: &ServiceView,
    config: &ServiceConfig,
) -> Result<(Color, u32), Skipped> {
    Ok(match hit.name {
        NameKind::Color => {
            let ttl = response
                .answers()
                .find(|a| a.address().is_some())
                .ok_or(Skipped::OtherName)?
                .ttl;
            (hit.color, ttl)
        }
        NameKind::Service => {
            let mut given = None;
            for answer in response.answers() {
                if answer.rtype == TYPE_CNAME {
                    let mut label = [0u8; 63];
                    let len = response.target_label(&answer, &mut label);
                    given = match &label[..len] {
                        b"blue" => Some((Color::Blue, answer.ttl)),
                        b"green" => Some((Color::Green, answer.ttl)),
                        _ => None,
                    };
                    break;
                }
                if let Some(address) = answer.address() {
                    // What each color answers now, or (a secondary a moment behind a
                    // runtime set) what the config says.
                    given = Color::ALL
                        .into_iter()
                        .find(|&c| view.state.addresses(config, c).contains(&address))
                        .or_else(|| {
                            Color::ALL
                                .into_iter()
                                .find(|&c| config.addresses(c).contains(&address))
                        })
                        .map(|c| (c, answer.ttl));
                    break;
                }
            }
            given.ok_or(Skipped::UnknownAddress)?
        }
    })
}
