//! Reading one TOML table of the config: typed getters that note a located problem for
//! every missing, mistyped or out-of-range value, and report every key nobody asked for.
//!
//! Each key of the config is read in exactly one place (see [`super::read`]), with its
//! default and range, through these getters; the keys a table accepts are the keys its
//! reader asks for, so there is no separate schema to keep in step.

use std::cell::RefCell;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::parse_duration;
use crate::problem::{Lines, Problem};

/// The file being read, and every problem found so far.
pub struct Document<'a> {
    pub path: &'a Path,
    /// Directory relative paths are resolved against.
    pub base: &'a Path,
    lines: Lines,
    problems: RefCell<Vec<Problem>>,
}

impl<'a> Document<'a> {
    pub fn new(path: &'a Path, text: &str) -> Document<'a> {
        Document {
            path,
            base: path.parent().unwrap_or(Path::new(".")),
            lines: Lines::new(text),
            problems: RefCell::new(Vec::new()),
        }
    }

    /// Notes a problem at byte `offset` of the file.
    pub fn problem(&self, offset: usize, message: impl Into<String>) {
        let line = self.lines.line_of(offset);
        self.problems
            .borrow_mut()
            .push(Problem::at(self.path, line, message));
    }

    /// Notes a problem at `line`.
    pub fn problem_at_line(&self, line: usize, message: impl Into<String>) {
        self.problems
            .borrow_mut()
            .push(Problem::at(self.path, line, message));
    }

    pub fn line_of(&self, offset: usize) -> usize {
        self.lines.line_of(offset)
    }

    pub fn has_problems(&self) -> bool {
        !self.problems.borrow().is_empty()
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems.into_inner()
    }
}

/// One table of the document, as `[name]` or `[[name]]` in messages.
pub struct Table<'d, 'a, 't> {
    doc: &'d Document<'a>,
    table: Option<&'t DeTable<'t>>,
    /// `[server]`, `[[service]]`, `[service.health]`: how messages name the table.
    pub name: String,
    /// `server`, `service`, `service.health`: the table's dotted path ("" at the top).
    dotted: String,
    /// Offset of the table in the file, for problems about the table as a whole.
    pub at: usize,
    /// The keys asked for, in order: the keys this table accepts.
    asked: RefCell<Vec<&'static str>>,
}

/// A string value with where it stands.
pub type Located<T> = Spanned<T>;

impl<'d, 'a, 't> Table<'d, 'a, 't> {
    /// The top level of the document.
    pub fn top(doc: &'d Document<'a>, table: &'t DeTable<'t>) -> Table<'d, 'a, 't> {
        Table {
            doc,
            table: Some(table),
            name: "the top level".into(),
            dotted: String::new(),
            at: 0,
            asked: RefCell::new(Vec::new()),
        }
    }

    pub fn doc(&self) -> &'d Document<'a> {
        self.doc
    }

    /// The line of the table.
    pub fn line(&self) -> usize {
        self.doc.line_of(self.at)
    }

    fn get(&self, key: &'static str) -> Option<&'t Spanned<DeValue<'t>>> {
        self.ask(key);
        self.table?.get(key)
    }

    /// Notes `key` as one this table accepts.
    fn ask(&self, key: &'static str) {
        let mut asked = self.asked.borrow_mut();
        if !asked.contains(&key) {
            asked.push(key);
        }
    }

    fn wrong_type(&self, key: &str, value: &Spanned<DeValue<'_>>, expected: &str) {
        self.doc.problem(
            value.span().start,
            format!(
                "`{key}` in {} must be {expected}, not {}",
                self.name,
                describe(value.get_ref())
            ),
        );
    }

    /// Says whether `key` is present, and notes a problem when it is not.
    pub fn require(&self, key: &'static str) -> bool {
        self.ask(key);
        let present = self.has(key);
        if !present {
            self.doc
                .problem(self.at, format!("missing `{key}` in {}", self.name));
        }
        present
    }

    /// A string, if present.
    pub fn string(&self, key: &'static str) -> Option<Located<String>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(value.span(), s.to_string())),
            _ => {
                self.wrong_type(key, value, "a string in quotes");
                None
            }
        }
    }

    /// A string that must be present.
    pub fn required_string(&self, key: &'static str) -> Option<Located<String>> {
        if !self.require(key) {
            return None;
        }
        self.string(key)
    }

    /// A path relative to the config file's directory, if present.
    pub fn path(&self, key: &'static str) -> Option<Located<PathBuf>> {
        self.string(key)
            .map(|s| Spanned::new(s.span(), self.doc.base.join(s.get_ref())))
    }

    /// A whole number, if present.
    pub fn integer(&self, key: &'static str) -> Option<Located<i64>> {
        let value = self.get(key)?;
        let number = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => None,
        };
        if number.is_none() {
            self.wrong_type(key, value, "a whole number (without quotes)");
        }
        number.map(|n| Spanned::new(value.span(), n))
    }

    /// A whole number in `range`, or `default` when absent.
    pub fn count(&self, key: &'static str, default: usize, range: RangeInclusive<usize>) -> usize {
        self.ranged(key, range).unwrap_or(default)
    }

    /// A whole number in `range`, if present (a problem otherwise).
    pub fn ranged(&self, key: &'static str, range: RangeInclusive<usize>) -> Option<usize> {
        let n = self.integer(key)?;
        match usize::try_from(*n.get_ref()) {
            Ok(v) if range.contains(&v) => Some(v),
            _ => {
                self.doc.problem(
                    n.span().start,
                    format!(
                        "`{key}` in {} must be between {} and {}",
                        self.name,
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A duration such as `"500ms"` or `"1h30m"` in `range`, or `default` when absent.
    pub fn duration(
        &self,
        key: &'static str,
        default: Duration,
        range: RangeInclusive<Duration>,
    ) -> Duration {
        self.ranged_duration(key, range).unwrap_or(default)
    }

    /// A duration in `range`, if present (a problem otherwise).
    pub fn ranged_duration(
        &self,
        key: &'static str,
        range: RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let text = self.string(key)?;
        match parse_duration(text.get_ref()) {
            Ok(d) if range.contains(&d) => Some(d),
            Ok(_) => {
                self.doc.problem(
                    text.span().start,
                    format!(
                        "`{key}` in {} must be between {} and {}",
                        self.name,
                        show_duration(*range.start()),
                        show_duration(*range.end())
                    ),
                );
                None
            }
            Err(e) => {
                self.doc.problem(text.span().start, format!("`{key}`: {e}"));
                None
            }
        }
    }

    /// `true` or `false`, or `default` when absent.
    pub fn boolean(&self, key: &'static str, default: bool) -> bool {
        let Some(value) = self.get(key) else {
            return default;
        };
        match value.get_ref() {
            DeValue::Boolean(b) => *b,
            _ => {
                self.wrong_type(key, value, "true or false");
                default
            }
        }
    }

    /// A list of strings, if present.
    pub fn strings(&self, key: &'static str) -> Option<Located<Vec<Located<String>>>> {
        let value = self.get(key)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, value, "a list of strings, like [\"a\", \"b\"]");
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(item.span(), s.to_string())),
                _ => self.wrong_type(key, item, "a list of strings"),
            }
        }
        Some(Spanned::new(value.span(), out))
    }

    /// A list of whole numbers in `range`, or empty when absent.
    pub fn numbers(&self, key: &'static str, range: RangeInclusive<u64>) -> Vec<u64> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, value, "a list of whole numbers, like [1000, 1001]");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let number = match item.get_ref() {
                DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix()).ok(),
                _ => None,
            };
            match number {
                Some(n) if range.contains(&n) => out.push(n),
                _ => self.doc.problem(
                    item.span().start,
                    format!(
                        "`{key}` in {} holds whole numbers between {} and {}",
                        self.name,
                        range.start(),
                        range.end()
                    ),
                ),
            }
        }
        out
    }

    /// The sub-table `[name.key]`; an empty one when absent.
    pub fn table(&self, key: &'static str) -> Table<'d, 'a, 't> {
        let dotted = if self.dotted.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.dotted)
        };
        let value = self.get(key);
        let table = match value.map(|v| (v, v.get_ref())) {
            Some((_, DeValue::Table(t))) => Some(t),
            Some((v, _)) => {
                self.wrong_type(key, v, "a table");
                None
            }
            None => None,
        };
        Table {
            doc: self.doc,
            table,
            name: format!("[{dotted}]"),
            dotted,
            at: value.map_or(self.at, |v| v.span().start),
            asked: RefCell::new(Vec::new()),
        }
    }

    /// Whether the table is written in the file at all.
    pub fn present(&self) -> bool {
        self.table.is_some()
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &'static str) -> bool {
        self.table.is_some_and(|t| t.get(key).is_some())
    }

    /// The tables `[[key]]`, in order.
    pub fn tables(&self, key: &'static str) -> Vec<Table<'d, 'a, 't>> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, value, &format!("a list of tables: [[{key}]]"));
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| match item.get_ref() {
                DeValue::Table(t) => Some(Table {
                    doc: self.doc,
                    table: Some(t),
                    name: format!("[[{key}]]"),
                    dotted: key.to_string(),
                    at: item.span().start,
                    asked: RefCell::new(Vec::new()),
                }),
                _ => {
                    self.wrong_type(key, item, &format!("a table: [[{key}]]"));
                    None
                }
            })
            .collect()
    }

    /// Reports every key of the table that no reader asked for.
    pub fn finish(self) {
        let Some(table) = self.table else { return };
        let asked = self.asked.into_inner();
        for (key, _) in table.iter() {
            let name: &str = key.get_ref();
            if !asked.contains(&name) {
                let place = if self.name == "the top level" {
                    "at the top level".to_string()
                } else {
                    format!("in {}", self.name)
                };
                self.doc.problem(
                    key.span().start,
                    format!(
                        "unknown key `{name}` {place}; expected one of: {}",
                        asked.join(", ")
                    ),
                );
            }
        }
    }
}

/// What a value is, for "must be X, not Y" messages.
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string {:?}", s.as_ref()),
        DeValue::Integer(i) => format!("the number {}", i.as_str()),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(_) => "a date".into(),
        DeValue::Array(_) => "a list".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

/// `100ms`, `5s`, `1h`: a duration as a config would write it.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
