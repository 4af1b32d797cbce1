//! The two colors of a blue-green service.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the two address sets of a service. Exactly one is live at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    /// Both colors, in the order used for arrays indexed by color.
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    /// The other color: where a rollback goes.
    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    /// Index into per-color arrays (`[T; 2]`).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a color name that is neither `blue` nor `green`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown color {0:?}: expected \"blue\" or \"green\"")]
pub struct UnknownColor(pub String);

impl FromStr for Color {
    type Err = UnknownColor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blue" => Ok(Color::Blue),
            "green" => Ok(Color::Green),
            other => Err(UnknownColor(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_the_two_colors() {
        assert_eq!("blue".parse::<Color>(), Ok(Color::Blue));
        assert_eq!("green".parse::<Color>(), Ok(Color::Green));
        assert!("purple".parse::<Color>().is_err());
        assert!("Blue".parse::<Color>().is_err());
        assert_eq!(Color::Blue.other(), Color::Green);
    }
}
