//! `reload`: re-read the config and zone files, and say what changed.

use super::Context;
use crate::protocol::{Error, ErrorKind, Reloaded, ZoneStatus};
use crate::reload::ReloadError;
use crate::switch::ReloadRefused;

pub async fn run(context: &Context, force: bool) -> Result<Reloaded, Error> {
    let report = context.reloader.reload(force).await.map_err(|e| {
        let kind = match e {
            ReloadError::Invalid(_) => ErrorKind::InvalidConfig,
            ReloadError::Refused(ReloadRefused::PendingCutover(_)) => ErrorKind::Busy,
            ReloadError::Refused(ReloadRefused::State(_)) | ReloadError::TimedOut(_) => {
                ErrorKind::Io
            }
        };
        Error::new(kind, e.to_string())
    })?;
    let changes = report.changes;
    Ok(Reloaded {
        added: changes.added,
        removed: changes.removed,
        changed: changes.changed,
        serials: changes
            .serials
            .into_iter()
            .map(|(origin, serial)| ZoneStatus { origin, serial })
            .collect(),
        restart_needed: report.restart_needed,
        addresses_from_config: changes.addresses_from_config,
    })
}
