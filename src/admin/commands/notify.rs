//! `notify`: every zone's NOTIFY now, to one secondary or all, and what each said.

use super::Context;
use crate::fleet::renotify::Notified;
use crate::protocol::{Error, ErrorKind, NotifiedSecondary, NotifiedZone};

/// Notifies `only` (a secondary's name or address) or every secondary.
pub async fn run(context: &Context, only: Option<&str>) -> Result<Vec<NotifiedSecondary>, Error> {
    if context.fleet.is_empty() {
        return Err(Error::new(
            ErrorKind::UnknownSecondary,
            "no secondaries are configured ([[secondary]] in the config)",
        ));
    }
    let notified = context
        .fleet
        .notify_now(only)
        .await
        .map_err(|e| Error::new(ErrorKind::UnknownSecondary, e.to_string()))?;
    Ok(notified.iter().map(secondary).collect())
}

fn secondary(notified: &Notified) -> NotifiedSecondary {
    NotifiedSecondary {
        name: notified.name.clone(),
        address: notified.address.to_string(),
        zones: notified
            .zones
            .iter()
            .map(|z| NotifiedZone {
                origin: z.origin.to_string(),
                serial: z.serial,
                acknowledged: z.acknowledged.is_ok(),
                serves: z.serves.as_ref().ok().copied(),
                error: match (&z.acknowledged, &z.serves) {
                    (Err(e), _) => Some(format!("NOTIFY: {e}")),
                    (Ok(()), Err(e)) => Some(format!("SOA query: {e}")),
                    (Ok(()), Ok(_)) => None,
                },
            })
            .collect(),
    }
}

/// How a `notify` went, in one audit line: acknowledgements per secondary, or the error.
pub fn outcome(notified: &Result<Vec<NotifiedSecondary>, Error>) -> String {
    match notified {
        Ok(all) => all
            .iter()
            .map(|s| {
                let acked = s.zones.iter().filter(|z| z.acknowledged).count();
                format!("{}: {acked}/{} acknowledged", s.name, s.zones.len())
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => e.message.clone(),
    }
}
