//! Telling systemd how the server is (sd_notify): ready, reloading, stopping, and a status
//! line, as `Type=notify` units expect (see `contrib/systemd/flipdns.service`).
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the Unix socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace); without the variable,
//! nothing is sent. A few lines of std do it, so no crate is added. A notification that
//! cannot be sent is logged at debug and dropped: the service manager is told, never
//! waited for.

use std::os::unix::net::UnixDatagram;

/// The socket systemd listens on, when running under it.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Started and serving: every socket bound, the state loaded.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={status}\n"));
}

/// A reload has begun; [`ready`] ends it.
pub fn reloading() {
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading\n",
        crate::clock::monotonic_us()
    ));
}

/// Shutting down: queries in flight finish, then the process exits.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=shutting down\n");
}

/// The status line of a server serving `services` in `zones`, e.g. `serving 1 service in 2
/// zones`.
pub fn serving(services: usize, zones: usize) -> String {
    let s = |n: usize| if n == 1 { "" } else { "s" };
    format!(
        "serving {services} service{} in {zones} zone{}",
        s(services),
        s(zones)
    )
}

fn notify(message: &str) {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = send(&path, message) {
        tracing::debug!("sd_notify to {}: {e}", path.to_string_lossy());
    }
}

fn send(path: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        socket.send_to(message.as_bytes(), path)?;
    }
    Ok(())
}
