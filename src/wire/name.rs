//! Names as bytes: the lowercase wire form (length-prefixed labels ending in the root
//! label), the one key under which names are compared, indexed and compressed.

use hickory_proto::rr::Name;

/// Lowercase wire form of `name`.
pub fn lower(name: &Name) -> Vec<u8> {
    lower_labels(name.iter())
}

/// Lowercase wire form of the name made of `labels` (the root label not among them).
pub fn lower_labels<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for label in labels {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_length_prefixed_lowercase_labels() {
        let name = Name::from_ascii("App.Svc.").unwrap();
        assert_eq!(lower(&name), b"\x03app\x03svc\x00");
        assert_eq!(lower(&Name::root()), b"\x00");
        let labels: [&[u8]; 1] = [b"SVC"];
        assert_eq!(lower_labels(labels), b"\x03svc\x00");
    }
}
