//! Running `flipdns ctl` on a terminal: a pseudo-terminal the test reads, so what a person
//! sees (lines redrawn in place, the order of stderr and stdout on one screen) is checked.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};

/// What a command wrote to its terminal (stdout and stderr both), and how it ended.
pub struct Screen {
    /// Raw bytes as text, carriage returns and escape sequences included.
    pub raw: String,
    pub status: ExitStatus,
}

impl Screen {
    /// The lines a person is left with: each `\r` redraw keeps only its last text, escape
    /// sequences are dropped, empty lines too.
    pub fn lines(&self) -> Vec<String> {
        let plain = strip_escapes(&self.raw);
        plain
            .split('\n')
            .filter_map(|line| line.split('\r').rfind(|part| !part.trim().is_empty()))
            .map(|line| line.trim_end().to_string())
            .filter(|line| !line.is_empty())
            .collect()
    }

    /// The index of the only line containing `needle`; panics if none or several do.
    pub fn line_of(&self, needle: &str) -> usize {
        let lines = self.lines();
        let found: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].contains(needle))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "exactly one line with {needle:?} on the screen:\n{}",
            lines.join("\n")
        );
        found[0]
    }
}

/// Runs `command` with stdin empty and stdout and stderr on a new pseudo-terminal 400
/// columns wide (no line wraps), and returns the screen once it exits.
pub fn run(mut command: Command) -> Screen {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 50,
        ws_col: 400,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty(3) fills two descriptors this test then owns.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let mut child = command.spawn().unwrap();
    drop(command); // the parent's copies of the terminal's side: EOF comes when the child exits
    let mut raw = Vec::new();
    let mut master = std::fs::File::from(master);
    let mut buffer = [0u8; 4096];
    loop {
        match master.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
            // Linux says EIO once the other side is closed.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
    let status = child.wait().unwrap();
    Screen {
        raw: String::from_utf8_lossy(&raw).into_owned(),
        status,
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
