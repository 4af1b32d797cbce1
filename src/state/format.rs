//! The state's formats on disk, each with its version: the snapshot file (version 4 written,
//! 1 to 3 read and upgraded) and the journal line (4 written, 3 read). Only [`super::store`] reads and writes
//! the files; this is what their bytes mean.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::store::StateError;
use super::{FlipCount, Phase, ServiceState, State, ZoneState};
use crate::color::Color;

/// The snapshot and journal version this build writes. Versions 1 to 3 are read and
/// upgraded (version 4 added a service's change in progress, which 3 did not have).
pub const VERSION: u32 = 4;

/// Whether this build reads journal lines of `version`: 3 had the shape of 4, less
/// the fields 4 added (they default).
pub(super) fn reads_journal(version: u32) -> bool {
    matches!(version, 3 | VERSION)
}

/// A change: the services and zones it rewrites, whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceState>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zones: BTreeMap<String, ZoneState>,
}

impl Delta {
    pub(super) fn apply(self, state: &mut State) {
        state.services.extend(self.services);
        state.zones.extend(self.zones);
    }
}

/// One journal line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Entry {
    pub(super) version: u32,
    pub(super) seq: u64,
    #[serde(flatten)]
    pub(super) delta: Delta,
}

/// The snapshot file of versions 3 and 4 (4 added fields with defaults).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV3 {
    version: u32,
    /// The last journal entry this snapshot includes.
    #[serde(default)]
    journal_seq: u64,
    #[serde(default)]
    services: BTreeMap<String, ServiceState>,
    #[serde(default)]
    zones: BTreeMap<String, ZoneState>,
}

/// A service as version 2 wrote it: the flip count was called `generation`, and phases
/// carried no `confirmed` (read as `false`: a restart assumes the worst).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceStateV2 {
    live: Color,
    generation: u64,
    #[serde(default)]
    flipped_at_ms: Option<u64>,
    #[serde(default)]
    phase: Phase,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV2 {
    #[serde(rename = "version")]
    _version: u32,
    #[serde(default)]
    services: BTreeMap<String, ServiceStateV2>,
    #[serde(default)]
    zones: BTreeMap<String, ZoneState>,
}

/// The state file's text for `state`, its journal sequence at `seq`.
pub(super) fn encode(state: &State, seq: u64) -> io::Result<Vec<u8>> {
    let mut text = serde_json::to_vec_pretty(&FileV3 {
        version: VERSION,
        journal_seq: seq,
        services: state.services.clone(),
        zones: state.zones.clone(),
    })
    .map_err(io::Error::other)?;
    text.push(b'\n');
    Ok(text)
}

/// The state in the snapshot file text `text` (read from `path`, for messages), and the
/// journal entry it includes, upgrading versions 1 and 2.
pub(super) fn decode_snapshot(text: &str, path: &Path) -> Result<(State, u64), StateError> {
    let corrupt = |e: serde_json::Error| StateError::Corrupt {
        path: path.to_path_buf(),
        line: e.line(),
        message: e.to_string(),
    };
    #[derive(Deserialize)]
    struct Version {
        version: Option<u64>,
    }
    let version: Version = serde_json::from_str(text).map_err(corrupt)?;
    match version.version {
        Some(1 | 2) => {
            let file: FileV2 = serde_json::from_str(text).map_err(corrupt)?;
            let services = file
                .services
                .into_iter()
                .map(|(name, s)| {
                    let state = ServiceState {
                        live: s.live,
                        flips: FlipCount(s.generation),
                        flipped_at_ms: s.flipped_at_ms,
                        phase: s.phase,
                        ttl: 0,
                        expires_ms: [0; 2],
                        expires_held: [None; 2],
                        fleet: None,
                        change: None,
                        addresses: None,
                        awaiting: None,
                    };
                    (name, state)
                })
                .collect();
            let state = State {
                services,
                zones: file.zones,
            };
            Ok((state, 0))
        }
        Some(3 | 4) => {
            let file: FileV3 = serde_json::from_str(text).map_err(corrupt)?;
            let state = State {
                services: file.services,
                zones: file.zones,
            };
            Ok((state, file.journal_seq))
        }
        Some(version) => Err(StateError::UnknownVersion {
            path: path.to_path_buf(),
            version,
        }),
        None => Err(StateError::Corrupt {
            path: path.to_path_buf(),
            line: 1,
            message: "no \"version\" field".into(),
        }),
    }
}
